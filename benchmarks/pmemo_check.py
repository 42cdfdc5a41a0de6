"""Real-music sanity check of an exported bundle on a few annotated PMEmo chorus clips.

Owns the comparison of :meth:`edgeemo.runtime.EmotionModel.predict_file` against the PMEmo
annotations in ``../shared/data/pmemo-samples`` (beside the checkout; ``EDGEEMO_SHARED_DATA``
may point at the ``data`` folder instead, ``--data`` at the samples folder itself). Each clip
``<id>.mp3`` has ``<id>.json`` with static ``valence_mean``/``arousal_mean`` and ``dynamic``
2 Hz curves, all on a 0..1 scale; they are mapped to [-1, 1] by ``2x - 1``.

For every clip it compares the predicted song mean with the static annotation (values and
quadrants) and, for the dynamic curves, interpolates the predictions (at window centres) onto
the annotation times inside the predicted range and reports Pearson r and RMSE per dimension
(r is NaN, shown ``n/a``, when either aligned series is constant). Prints a markdown table,
writes one PNG (a row per clip: curves over time, and the valence/arousal plane) and, with
``--json PATH``, the same numbers as JSON (NaN written as null). Four clips are far too few to
measure accuracy: this only shows whether a bundle behaves sensibly on real music.

    .venv/bin/python benchmarks/pmemo_check.py [--bundle DIR] [--data DIR] [--png PATH] [--json PATH]

Needs matplotlib (the [train] extra) besides the runtime. The PMEmo files are research-use
only: never copy them into the repository.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo import metrics
from edgeemo.runtime import EmotionModel
from edgeemo.runtime.model import Prediction
from edgeemo.runtime.stream import quadrant_label

REPO = Path(__file__).resolve().parents[1]
SAMPLES_NAME = "pmemo-samples"
DIMS = ("valence", "arousal")


def default_data_dir() -> Path:
    """``$EDGEEMO_SHARED_DATA/pmemo-samples`` if that variable is set, else ``<repo>/../shared/data/pmemo-samples``."""
    env = os.environ.get("EDGEEMO_SHARED_DATA")
    if env:
        return Path(env).expanduser() / SAMPLES_NAME
    return Path(__file__).resolve().parents[2] / "shared" / "data" / SAMPLES_NAME


def to_unit(x: Any) -> np.ndarray:
    """PMEmo's 0..1 scale -> edgeemo's [-1, 1]."""
    return 2.0 * np.asarray(x, dtype=np.float64) - 1.0


def find_clips(data: Path) -> list[tuple[Path, Path]]:
    """``(mp3, json)`` pairs in ``data``, sorted by numeric id where the stem is numeric."""
    pairs = [(mp3, mp3.with_suffix(".json")) for mp3 in data.glob("*.mp3") if mp3.with_suffix(".json").is_file()]
    return sorted(pairs, key=lambda p: (0, int(p[0].stem), "") if p[0].stem.isdigit() else (1, 0, p[0].stem))


def safe_pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """:func:`edgeemo.metrics.pearson`, but NaN (not its 0.0) when a series is constant or too short."""
    if y_true.size < 2 or np.ptp(y_true) == 0.0 or np.ptp(y_pred) == 0.0:
        return math.nan
    return metrics.pearson(y_true, y_pred)


def align(pred: Prediction, t_ann: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Annotation times inside the predicted window-centre range, and the predictions interpolated onto them."""
    if len(pred) == 0:
        return np.zeros(0), {d: np.zeros(0) for d in DIMS}
    keep = (t_ann >= pred.times[0]) & (t_ann <= pred.times[-1])
    t = t_ann[keep]
    if len(pred) == 1:  # a single window: a constant prediction at its one time
        return t, {d: np.full(t.shape, float(getattr(pred, d)[0])) for d in DIMS}
    return t, {d: np.interp(t, pred.times, getattr(pred, d).astype(np.float64)) for d in DIMS}


def check_clip(model: EmotionModel, mp3: Path, ann_file: Path) -> dict[str, Any]:
    """Predict one clip and compare it with its annotations; returns numbers plus series for plotting."""
    ann = json.loads(ann_file.read_text())
    start = time.perf_counter()
    pred = model.predict_file(mp3)
    seconds = time.perf_counter() - start
    dyn = ann["dynamic"]
    t_ann = np.asarray(dyn["t"], dtype=np.float64)
    ann_curves = {d: to_unit(dyn[d]) for d in DIMS}
    ann_static = {d: float(to_unit(ann[f"{d}_mean"])) for d in DIMS}
    pred_static = {d: float(pred.summary[d]) for d in DIMS}
    t_al, pred_al = align(pred, t_ann)
    keep = np.isin(t_ann, t_al)
    dynamic: dict[str, float] = {"points": int(t_al.size)}
    for d in DIMS:
        truth = ann_curves[d][keep]
        ok = truth.size > 0
        dynamic[f"r_{d}"] = safe_pearson(truth, pred_al[d]) if ok else math.nan
        dynamic[f"rmse_{d}"] = metrics.rmse(truth, pred_al[d]) if ok else math.nan
    ann_quadrant = str(ann.get("quadrant") or quadrant_label(ann_static["valence"], ann_static["arousal"]))
    return {
        "id": mp3.stem,
        "title": str(ann.get("title", "")),
        "artist": str(ann.get("artist", "")),
        "duration_s": float(pred.summary["duration_s"]),
        "windows": len(pred),
        "padded": bool(pred.padded),
        "predict_seconds": seconds,
        "annotated": {**ann_static, "quadrant": ann_quadrant},
        "annotated_quadrant_from_means": quadrant_label(ann_static["valence"], ann_static["arousal"]),
        "predicted": {**pred_static, "quadrant": quadrant_label(pred_static["valence"], pred_static["arousal"])},
        "dynamic": dynamic,
        "_series": {"pred": pred, "t_ann": t_ann, "ann": ann_curves},
    }


def _json_ready(x: Any) -> Any:
    """NaN/inf -> None, recursively, so ``--json`` output is strict JSON."""
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_ready(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def card_line(model: EmotionModel) -> str:
    card = model.card
    td = card.get("training_data")
    if isinstance(td, dict):
        bits = [str(td.get("description") or td.get("dataset") or "?")]
        if td.get("preset"):
            bits.append(f"preset {td['preset']}")
        td_text = "; ".join(bits)
    else:
        td_text = str(td) if td is not None else "?"
    return f"bundle `{card.get('name', '?')}` ({model.bundle.path}, {model.model_file}); training data: {td_text}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| clip | title | annotated V/A | predicted V/A | annotated quadrant | predicted quadrant "
        "| r_V | r_A | RMSE_V | RMSE_A |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, p, dyn = r["annotated"], r["predicted"], r["dynamic"]
        lines.append(
            f"| {r['id']} | {r['title']} ({r['artist']}) "
            f"| {_fmt(a['valence'], True)} / {_fmt(a['arousal'], True)} "
            f"| {_fmt(p['valence'], True)} / {_fmt(p['arousal'], True)} "
            f"| {a['quadrant']} | {p['quadrant']} "
            f"| {_fmt(dyn['r_valence'], True)} | {_fmt(dyn['r_arousal'], True)} "
            f"| {_fmt(dyn['rmse_valence'])} | {_fmt(dyn['rmse_arousal'])} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], bundle_name: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(n, 2, figsize=(13, 3.4 * n), gridspec_kw={"width_ratios": [2.6, 1]}, squeeze=False)
    colours = {"valence": "tab:blue", "arousal": "tab:red"}
    for (ax_t, ax_va), r in zip(axes, rows, strict=True):
        s = r["_series"]
        pred: Prediction = s["pred"]
        for d in DIMS:
            ax_t.plot(s["t_ann"], s["ann"][d], "-", color=colours[d], lw=1.8, label=f"{d} annotated")
            ax_t.plot(pred.times, getattr(pred, d), "--", color=colours[d], lw=1.4, label=f"{d} predicted")
        ax_t.axhline(0.0, color="0.6", lw=0.7)
        ax_t.set_ylim(-1.05, 1.05)
        ax_t.set_xlabel("time (s)")
        ax_t.set_ylabel("value in [-1, 1]")
        dyn = r["dynamic"]
        ax_t.set_title(
            f"{r['id']}: {r['title']} ({r['artist']}) | {bundle_name}  "
            f"r_V {_fmt(dyn['r_valence'], True)}, r_A {_fmt(dyn['r_arousal'], True)}",
            fontsize=9,
        )

        ax_va.axhline(0.0, color="0.6", lw=0.7)
        ax_va.axvline(0.0, color="0.6", lw=0.7)
        ax_va.plot(s["ann"]["valence"], s["ann"]["arousal"], "-", color="0.75", lw=1, label="annotated path")
        ax_va.plot(pred.valence, pred.arousal, "--", color="tab:purple", lw=1, alpha=0.8, label="predicted path")
        a, p = r["annotated"], r["predicted"]
        ax_va.plot(a["valence"], a["arousal"], "*", color="black", ms=13, label="annotated static mean")
        ax_va.plot(p["valence"], p["arousal"], "o", color="tab:purple", ms=8, label="predicted song mean")
        ax_va.set_xlim(-1.05, 1.05)
        ax_va.set_ylim(-1.05, 1.05)
        ax_va.set_aspect("equal")
        ax_va.set_xlabel("valence")
        ax_va.set_ylabel("arousal")
        ax_va.set_title(f"{r['id']} | {bundle_name}: annotated {a['quadrant']}, predicted {p['quadrant']}", fontsize=9)
    handles = [h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (3.4 * n)))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the reference bundle)")
    ap.add_argument("--data", type=Path, default=None, help=f"PMEmo samples folder (default: {default_data_dir()})")
    ap.add_argument("--png", type=Path, default=REPO / "benchmarks" / "pmemo_check.png", help="figure to write")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)

    data: Path = args.data if args.data is not None else default_data_dir()
    if not data.is_dir():
        print(
            f"pmemo_check: PMEmo samples folder not found: {data} (pass --data or set EDGEEMO_SHARED_DATA)",
            file=sys.stderr,
        )
        return 2
    clips = find_clips(data)
    if not clips:
        print(f"pmemo_check: no <id>.mp3 + <id>.json pairs in {data}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    model = EmotionModel.load(args.bundle)
    load_s = time.perf_counter() - start
    rows = [check_clip(model, mp3, ann) for mp3, ann in clips]
    bundle_name = str(model.card.get("name", "?"))

    print(card_line(model))
    print()
    print(markdown_table(rows))
    print()
    mismatched = [r["id"] for r in rows if r["annotated"]["quadrant"] != r["annotated_quadrant_from_means"]]
    if mismatched:
        print(f"note: annotated quadrant field differs from the quadrant of the annotated means for {mismatched}")
    hits = sum(r["annotated"]["quadrant"] == r["predicted"]["quadrant"] for r in rows)
    total_predict = sum(r["predict_seconds"] for r in rows)
    print(
        f"static quadrant agreement {hits}/{len(rows)}; load {load_s:.2f} s, predict {total_predict:.2f} s "
        f"for {sum(r['duration_s'] for r in rows):.0f} s of audio"
    )

    plot(rows, bundle_name, args.png)
    print(f"figure: {args.png}")
    if args.json:
        out = {
            "bundle": {"path": str(model.bundle.path), "name": bundle_name, "model_file": model.model_file},
            "training_data": model.card.get("training_data"),
            "data": str(data),
            "load_seconds": load_s,
            "clips": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_ready(out), indent=2, allow_nan=False) + "\n")
        print(f"numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
