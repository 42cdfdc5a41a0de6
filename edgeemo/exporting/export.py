"""``edgeemo export``: a finished run -> ONNX fp32 (+ static int8) -> verification gate -> bundle.

Owns the order of the export steps and the model card's content. Everything is
built in a temporary folder; the bundle appears at ``out_dir`` only when every
check passed (:func:`edgeemo.bundle.write_bundle` renames it into place).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo import __version__
from edgeemo.errors import EdgeemoError
from edgeemo.evaluation import predict_windowset, window_and_song_report
from edgeemo.exporting.onnx import ExportError, check_parity, export_onnx, onnx_predictor
from edgeemo.exporting.quantize import CANDIDATES, DEFAULT_RECIPE, QuantRecipe, median_latency_ms, quantize_int8
from edgeemo.exporting.verify import GateThresholds, enforce_gate, gate_figures, gate_table

PARITY_WINDOWS = 64


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def calibration_windows(train, n: int, seed: int = 0) -> np.ndarray:
    """``n`` real training windows spread over songs (random, seeded) for int8 calibration."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(train), size=min(n, len(train)), replace=False))
    return train.batch(idx)


def choose_recipe(
    fp32_path: Path, calib: np.ndarray, test, fp32_ccc: float, shape: tuple[int, int], max_drop: float, tmp: Path
) -> tuple[QuantRecipe, Path, list[dict[str, Any]]]:
    """Quantise with every candidate recipe; ship the fastest whose CCC drop passes (else the most accurate)."""
    rows = []
    for i, recipe in enumerate(CANDIDATES):
        path = tmp / f"cand{i}.int8.onnx"
        try:
            quantize_int8(fp32_path, path, calib, recipe)
            preds = predict_windowset(onnx_predictor(path), test)
            ccc = window_and_song_report(test, preds)["ccc_mean"]
            med, p95 = median_latency_ms(path, shape)
            rows.append(
                {
                    **recipe.to_dict(),
                    "ccc_mean": ccc,
                    "drop": fp32_ccc - ccc,
                    "latency_ms": med,
                    "latency_p95_ms": p95,
                    "bytes": path.stat().st_size,
                    "path": path,
                    "recipe": recipe,
                }
            )
            _log(f"[export] int8 {recipe.label}: CCC {ccc:.4f} (drop {fp32_ccc - ccc:+.4f}), {med:.2f} ms")
        except Exception as exc:  # a recipe the quantiser cannot handle is recorded, not fatal
            rows.append({**recipe.to_dict(), "error": f"{type(exc).__name__}: {str(exc)[:160]}"})
            _log(f"[export] int8 {recipe.label}: failed ({type(exc).__name__})")
    ok = [r for r in rows if "error" not in r and r["drop"] <= max_drop]
    pool = ok or [r for r in rows if "error" not in r]
    if not pool:
        raise ExportError("every int8 recipe failed to quantise the student: " + rows[0].get("error", "?"))
    best = min(pool, key=lambda r: r["latency_ms"]) if ok else min(pool, key=lambda r: r["drop"])
    table = [{k: v for k, v in r.items() if k not in ("path", "recipe")} for r in rows]
    return best["recipe"], best["path"], table


def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    int8: bool = True,
    calibration_count: int = 256,
    recipe: str = "auto",
    thresholds: GateThresholds | None = None,
    name: str | None = None,
    reproduce: str | None = None,
) -> dict[str, Any]:
    """Export a finished run's student (and the teacher, for the figures); returns the card."""
    import torch

    from edgeemo.bundle import write_bundle
    from edgeemo.train.distill import load_model
    from edgeemo.train.models import count_params
    from edgeemo.train.pipeline import open_run
    from edgeemo.train.rundata import prepare_run_data

    th = thresholds or GateThresholds()
    run = open_run(Path(run_dir), None, None)
    for stage in ("teacher", "student"):
        if not run.done(stage):
            raise EdgeemoError(f"run {run.dir} has no finished {stage}; finish it with `edgeemo train-all`")
    name = name or run.dir.name
    out_dir = Path(out_dir) if out_dir else Path("export") / name
    data = prepare_run_data(run.dir, run.cfg, run.sources)
    test, train = data.windows("test"), data.windows("train")
    shape = run.cfg.features.shape
    teacher, _ = load_model(run.dir / "teacher" / "best.pt")
    student, _ = load_model(run.dir / "student" / "best.pt")
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    def torch_pred(model):
        def f(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(x)).numpy()

        return f

    reports: dict[str, dict[str, float]] = {
        "teacher_torch": window_and_song_report(test, predict_windowset(torch_pred(teacher), test)),
        "student_torch": window_and_song_report(test, predict_windowset(torch_pred(student), test)),
    }
    parity_x = test.batch(np.linspace(0, len(test) - 1, min(PARITY_WINDOWS, len(test))).round().astype(int))
    run_export = run.dir / "export"
    run_export.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=run_export) as tmp_s:
        tmp = Path(tmp_s)
        teacher_onnx = export_onnx(teacher, run_export / "teacher.onnx", shape)
        teacher_diff = check_parity(teacher, teacher_onnx, parity_x)
        fp32 = export_onnx(student, tmp / "model.onnx", shape)
        student_diff = check_parity(student, fp32, parity_x)
        _log(
            f"[export] ONNX parity vs torch on {len(parity_x)} test windows: student {student_diff:.2e}, "
            f"teacher {teacher_diff:.2e}"
        )
        reports["student_fp32"] = window_and_song_report(test, predict_windowset(onnx_predictor(fp32), test))
        sizes = {"teacher_fp32": teacher_onnx.stat().st_size, "student_fp32": fp32.stat().st_size}
        latency = {"student_fp32": median_latency_ms(fp32, shape)[0], "teacher_torch": None}
        models = {"model.onnx": fp32}
        quant: dict[str, Any] | None = None
        if int8:
            calib = calibration_windows(train, calibration_count, run.cfg.seed)
            if recipe == "auto":
                chosen, int8_path, table = choose_recipe(
                    fp32, calib, test, reports["student_fp32"]["ccc_mean"], shape, th.max_int8_drop, tmp
                )
            else:
                matches = [r for r in CANDIDATES if r.label == recipe or r.fmt == recipe]
                chosen = matches[0] if matches else DEFAULT_RECIPE
                int8_path, table = quantize_int8(fp32, tmp / "int8.onnx", calib, chosen), []
            final_int8 = tmp / "model.int8.onnx"
            Path(int8_path).replace(final_int8)
            reports["student_int8"] = window_and_song_report(test, predict_windowset(onnx_predictor(final_int8), test))
            sizes["student_int8"] = final_int8.stat().st_size
            latency["student_int8"] = median_latency_ms(final_int8, shape)[0]
            models["model.int8.onnx"] = final_int8
            quant = {"recipe": chosen.to_dict(), "calibration_windows": len(calib), "candidates": table}
        shipped = "student_int8" if int8 else "student_fp32"
        params = {"teacher": count_params(teacher), "student": count_params(student)}
        ccc_means = {k: v["ccc_mean"] for k, v in reports.items()}
        figures = gate_figures(ccc_means, sizes, params, shipped)
        latency = {k: v for k, v in latency.items() if v is not None}
        print(gate_table(reports, figures, latency, th), flush=True)
        enforce_gate(figures, th)
        summary = {}
        if (run.dir / "summary.json").is_file():
            from edgeemo.train.checkpoint import read_json

            summary = read_json(run.dir / "summary.json")
        card = {
            "schema_version": 1,
            "edgeemo_version": __version__,
            "name": name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "feature_config": run.cfg.features.to_dict(),
            "input": {"name": "mel", "shape": [None, 1, *shape], "dtype": "float32"},
            "output": {
                "name": "valence_arousal",
                "shape": [None, 2],
                "labels": ["valence", "arousal"],
                "range": [-1, 1],
            },
            "training_data": {
                **data.describe(),
                "sources": [s.to_dict() for s in run.sources],
                "preset": run.cfg.preset,
            },
            "models": {
                "teacher": {"arch": run.cfg.teacher_arch, "params": params["teacher"]},
                "student": {"arch": run.cfg.student_arch, "params": params["student"]},
            },
            "metrics": {
                "split": "test",
                "test_songs": len(test.songs),
                "test_windows": len(test),
                **{k: {m: float(v[m]) for m in ("ccc_valence", "ccc_arousal", "ccc_mean")} for k, v in reports.items()},
                "retention": figures["retention_by_model"],
                "int8_drop": figures["int8_drop"],
                "onnx_parity_max_abs": {"student": student_diff, "teacher": teacher_diff},
            },
            "compression": {
                "teacher_fp32_onnx_bytes": sizes["teacher_fp32"],
                "student_fp32_onnx_bytes": sizes["student_fp32"],
                "student_int8_onnx_bytes": sizes.get("student_int8"),
                "compression": figures["compression"],
                "param_ratio": figures["param_ratio"],
            },
            "latency_ms_1thread": latency,
            "gate": {"thresholds": th.to_dict(), "passed": True},
            "quantization": quant,
            "training_wall_seconds": summary.get("seconds"),
            "reproduce": reproduce
            or f"edgeemo train-all --name {run.dir.name} --preset {run.cfg.preset} && "
            f"edgeemo export {run.dir} {'--int8 ' if int8 else ''}--out {out_dir}",
            "default_model": "model.int8.onnx" if int8 else "model.onnx",
        }
        write_bundle(out_dir, models, card)
    _log(f"[export] bundle written to {out_dir}")
    return card
