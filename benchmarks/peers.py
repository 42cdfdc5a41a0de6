"""Same-split peer comparison: classic music-emotion systems vs edgeemo on the 4Q test songs of a run.

Trains two peer systems on the artist-disjoint split of 4q-dev that an edgeemo run was
trained and evaluated on (``runs/<run>/split.json``) and prints one table of song-level
quadrant metrics and per-clip CPU cost:

* **librosa + SVM** -- the classic baseline (as in the 4Q paper): handcrafted clip
  statistics (MFCC, delta-MFCC, chroma, spectral shape, ZCR, RMS, tempo, onset strength,
  tonnetz) -> StandardScaler -> RBF SVC.
* **musicnn + LR** -- MSD-musicnn embeddings (:mod:`edgeemo.pretrained.musicnn`), averaged
  over a clip's 3 s patches -> StandardScaler -> logistic regression.
* **edgeemo** -- the run's teacher checkpoint and the exported bundle's fp32 and int8
  student, scored by the same code as ``edgeemo evaluate`` (:func:`load_predictor`,
  :func:`predict_windowset`, :func:`song_quadrant_report`).

Peers train on the 4Q songs of train + val (edgeemo used val only for model selection) and
are tested on the 4Q songs of test; built-in synthetic songs are ignored. Every
hyperparameter is chosen by GroupKFold over artists on the training part only: the
4-class model by macro-F1, the two binary models that give the valence score (Q1/Q4
positive) and the arousal score (Q1/Q2 positive) by ROC AUC. A peer's quadrant is its
4-class prediction; its V-AUC/A-AUC are those of the binary models' scores. All metrics
come from :mod:`edgeemo.metrics`, so peers and edgeemo are scored alike.

Inference cost is measured on one core (BLAS, torch and onnxruntime limited to one thread)
for a 30 s clip, from decoded audio (at the system's own sample rate) to the quadrant: the
median over a few test clips of the process CPU time (robust when other jobs share the
machine; the JSON also holds the wall time).

Per-clip features and embeddings are cached in ``~/.cache/edgeemo/clipfeatures/`` (``$EDGEEMO_CACHE``
moves it; :mod:`edgeemo.clipfeatures`, keyed by file content, shared with ``edgeemo cv``), so a
re-run only refits the classifiers.

    .venv/bin/python benchmarks/peers.py --run runs/NAME [--bundle export/reference]
        [--peers librosa,musicnn] [--json benchmarks/results_peers.json] [--quick]

Run it from the repository root (run configs name their data relative to it). The musicnn
peer needs the converted weights (``edgeemo pretrained import-musicnn``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo import metrics
from edgeemo.atomic import atomic_write_text
from edgeemo.clipfeatures import (
    LIBROSA_SR,
    ClipFeatureCache,
    bundle_window_fn,
    clip_matrix,
    default_feature_cache,
    librosa_extractor,
    librosa_features,
    limit_threads,
    musicnn_extractor,
)
from edgeemo.cv import json_safe
from edgeemo.data.types import Song
from edgeemo.data.windows import default_cache_dir
from edgeemo.peer_models import (  # noqa: F401 (re-exported: tests and linear_probe.py use them as peers.*)
    LR_GRID,
    POSITIVE,
    SVC_GRID,
    PeerModel,
    SearchResult,
    binary_scores,
    evaluate_peer,
    fit_peer,
    grouped_folds,
    grouped_search,
    macro_f1,
    make_lr,
    make_svc,
    param_grid,
    peer_metrics,
    score_auc,
    score_macro_f1,
)

MUSICNN_SR = 16000
PEERS = ("librosa", "musicnn")
# clip vectors of edgeemo.clipfeatures.musicnn_extractor that make each embedding variant (means over 3 s patches)
MUSICNN_VARIANTS: dict[str, tuple[str, ...]] = {
    "penultimate": ("penultimate.mean",),
    "mean_pool+max_pool": ("mean_pool.mean", "max_pool.mean"),
}
TABLE_COLUMNS = ("system", "quadrant acc", "macro-F1", "V-AUC", "A-AUC", "CPU ms / 30 s clip (1 core)")


# --- tables --------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of result rows (keys ``system``, ``metrics`` (quadrant_report keys), ``ms_per_clip``)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|---|" + "---:|" * (len(TABLE_COLUMNS) - 1)]
    for r in rows:
        m = r.get("metrics", {})
        cells = [
            str(r["system"]),
            _fmt(m.get("quadrant_accuracy")),
            _fmt(m.get("quadrant_macro_f1")),
            _fmt(m.get("valence_auc")),
            _fmt(m.get("arousal_auc")),
            _fmt(r.get("ms_per_clip"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- features ----------------------------------------------------------------------------------
# --- timing ------------------------------------------------------------------------------------
def median_ms(fn: Callable[[np.ndarray], Any], signals: Sequence[np.ndarray], repeats: int = 1) -> dict[str, float]:
    """Median CPU and wall time of ``fn(signal)`` in ms over ``signals`` (each run ``repeats`` times, after a warm-up).

    With every library held to one thread, CPU time is the cost on one core even when other
    jobs share the machine; wall time is kept beside it (``wall``).
    """
    fn(signals[0])
    cpu, wall = [], []
    for sig in signals:
        for _ in range(repeats):
            c, t = time.process_time(), time.perf_counter()
            fn(sig)
            cpu.append((time.process_time() - c) * 1000.0)
            wall.append((time.perf_counter() - t) * 1000.0)
    return {"cpu": float(np.median(cpu)), "wall": float(np.median(wall))}


def timing_fields(ms: dict[str, float]) -> dict[str, float]:
    """Row fields of a :func:`median_ms` result: ``ms_per_clip`` (CPU, the table's figure) and ``wall_ms_per_clip``."""
    return {"ms_per_clip": ms["cpu"], "wall_ms_per_clip": ms["wall"]}


# --- edgeemo -----------------------------------------------------------------------------------
def edgeemo_predictors(run_dir: Path, bundle: Path) -> list[tuple[str, Callable[[np.ndarray], np.ndarray], Any, str]]:
    """``(system, predict_windows, FeatureConfig, label)`` for the teacher, student fp32 and student int8.

    The teacher and the bundle's default (int8) model come from ``edgeemo evaluate``'s
    :func:`~edgeemo.evaluate_cli.load_predictor`; fp32 is the same bundle opened with
    ``prefer_int8=False``. ONNX sessions run on one thread.
    """
    from edgeemo.evaluate_cli import load_predictor
    from edgeemo.runtime import EmotionModel

    out = []
    ckpt = run_dir / "teacher" / "best.pt"
    if ckpt.is_file():
        predict, cfg, label = load_predictor(ckpt)
        out.append(("edgeemo teacher (torch fp32)", predict, cfg, label))
    else:
        print(f"no teacher checkpoint at {ckpt}: teacher row left out", file=sys.stderr)
    fp32 = EmotionModel.load(bundle, threads=1, prefer_int8=False)
    label = f"bundle {bundle} {fp32.model_file}"
    out.append(("edgeemo student fp32 (ONNX)", fp32.predict_windows, fp32.feature_config, label))
    predict, cfg, label = load_predictor(bundle)  # the bundle's default model (int8), 1 thread, as `edgeemo evaluate`
    default = EmotionModel.load(bundle).model_file
    kind = "int8" if "int8" in default else default
    out.append((f"edgeemo student {kind} (ONNX)", predict, cfg, f"{label} {default}"))
    return out


def edgeemo_clip_fn(predict: Callable[[np.ndarray], np.ndarray], cfg: Any) -> Callable[[np.ndarray], str]:
    """Decoded signal at ``cfg.sample_rate`` -> quadrant: every window (:func:`bundle_window_fn`), mean, sign rule."""
    windows = bundle_window_fn(predict, cfg)

    def run(signal: np.ndarray) -> str:
        va = windows(signal)["va"].mean(0)
        return str(metrics.quadrant_of(va[:1], va[1:])[0])

    return run


def edgeemo_rows(songs: list[Song], run_dir: Path, bundle: Path, timing: list[Path]) -> list[dict[str, Any]]:
    from edgeemo.data.windows import build_windows
    from edgeemo.evaluation import predict_windowset, song_quadrant_report
    from edgeemo.runtime.audio import load_audio

    rows = []
    windows_by_cfg: dict[str, Any] = {}
    for system, predict, cfg, label in edgeemo_predictors(run_dir, bundle):
        key = cfg.digest()
        if key not in windows_by_cfg:
            windows_by_cfg[key] = build_windows(songs, cfg, default_cache_dir(), progress=True)
        windows = windows_by_cfg[key]
        quadrants = song_quadrant_report(windows, predict_windowset(predict, windows))
        signals = [load_audio(p, cfg.sample_rate) for p in timing]
        ms = median_ms(edgeemo_clip_fn(predict, cfg), signals)
        metrics_ = quadrants.metrics if quadrants else {}
        rows.append({"system": system, "model": label, "metrics": metrics_, **timing_fields(ms)})
        print(f"{system}: done", file=sys.stderr, flush=True)
    return rows


# --- data --------------------------------------------------------------------------------------
def split_songs(run_dir: Path) -> tuple[list[Song], list[Song]]:
    """4Q songs (those with a quadrant) of the run's train + val and of its test split."""
    from edgeemo.train.pipeline import open_run
    from edgeemo.train.rundata import prepare_run_data, split_file

    if not split_file(run_dir).is_file():
        raise SystemExit(f"{split_file(run_dir)} not found: peers reuse a trained run's split")
    run = open_run(run_dir, None)
    data = prepare_run_data(run.dir, run.cfg.data)
    train = [s for k in ("train", "val") for s in data.splits[k] if s.quadrant]
    test = [s for s in data.splits["test"] if s.quadrant]
    if not train or not test:
        raise SystemExit(f"run {run_dir} has no quadrant-labelled (4Q) songs in its split")
    return train, test


def subsample(songs: list[Song], n: int, seed: int = 0) -> list[Song]:
    if len(songs) <= n:
        return songs
    keep = np.sort(np.random.default_rng(seed).choice(len(songs), n, replace=False))
    return [songs[i] for i in keep]


# --- main --------------------------------------------------------------------------------------
def run_librosa(
    train: list[Song], test: list[Song], cache: ClipFeatureCache, folds: int, timing: list[Path]
) -> dict[str, Any]:
    from edgeemo.runtime.audio import load_audio

    ex = librosa_extractor()
    x_tr, x_te = (clip_matrix(songs, ex, cache).select(["x"]) for songs in (train, test))
    model = fit_peer(x_tr, [s.quadrant for s in train], [s.group for s in train], make_svc, SVC_GRID, folds)
    signals = [load_audio(p, LIBROSA_SR) for p in timing]
    ms = median_ms(lambda y: model.quadrant.predict(librosa_features(y)[None]), signals)
    return {
        "system": "librosa features + SVM (RBF)",
        "metrics": evaluate_peer(model, x_te, [s.quadrant for s in test]),
        **timing_fields(ms),
        "features": f"{x_tr.shape[1]} handcrafted statistics",
        "hyperparameters": {k: v.to_dict() for k, v in model.search.items()},
    }


def run_musicnn(
    train: list[Song], test: list[Song], cache: ClipFeatureCache, folds: int, timing: list[Path]
) -> dict[str, Any]:
    from edgeemo.runtime.audio import load_audio

    ex = musicnn_extractor()
    c_tr, c_te = clip_matrix(train, ex, cache), clip_matrix(test, ex, cache)
    m_tr = {v: c_tr.select(keys) for v, keys in MUSICNN_VARIANTS.items()}
    m_te = {v: c_te.select(keys) for v, keys in MUSICNN_VARIANTS.items()}
    q_tr, g_tr = [s.quadrant for s in train], [s.group for s in train]
    variant_search = {
        v: grouped_search(m_tr[v], np.asarray(q_tr), g_tr, make_lr, LR_GRID, score_macro_f1, folds)
        for v in MUSICNN_VARIANTS
    }
    best = max(MUSICNN_VARIANTS, key=lambda v: variant_search[v].score)  # ties: the first (penultimate)
    model = fit_peer(m_tr[best], q_tr, g_tr, make_lr, LR_GRID, folds, quadrant_search=variant_search[best])
    signals = [load_audio(p, MUSICNN_SR) for p in timing]

    def clip(sig: np.ndarray) -> Any:
        vectors = ex(sig)
        return model.quadrant.predict(np.concatenate([vectors[k] for k in MUSICNN_VARIANTS[best]])[None])

    return {
        "system": f"MSD-musicnn ({best}) + LogReg",
        "metrics": evaluate_peer(model, m_te[best], [s.quadrant for s in test]),
        **timing_fields(median_ms(clip, signals)),
        "features": f"{best}: {m_tr[best].shape[1]} dims, mean over 3 s patches",
        "embedding_cv_macro_f1": {v: r.score for v, r in variant_search.items()},
        "hyperparameters": {k: v.to_dict() for k, v in model.search.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", type=Path, required=True, help="run whose split.json and teacher to use")
    ap.add_argument(
        "--bundle", type=Path, default=Path("export/reference"), help="bundle with model.onnx/model.int8.onnx"
    )
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)} (or 'none')")
    ap.add_argument("--no-edgeemo", action="store_true", help="leave out the edgeemo rows")
    ap.add_argument(
        "--json", type=Path, default=Path("benchmarks/results_peers.json"), help="where to write the results"
    )
    ap.add_argument("--folds", type=int, default=5, help="grouped CV folds for the hyperparameter search")
    ap.add_argument("--timing-clips", type=int, default=5, help="test clips timed (median)")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 60 training songs, 30 test songs, 2 folds, 2 clips"
    )
    args = ap.parse_args(argv)
    peers = [p for p in args.peers.split(",") if p and p != "none"]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")

    started = time.perf_counter()
    limit_threads()
    train, test = split_songs(args.run)
    folds, n_timing = args.folds, args.timing_clips
    if args.quick:
        train, test, folds, n_timing = subsample(train, 60), subsample(test, 30), 2, 2
    timing = [s.path for s in test[:n_timing]]
    print(
        f"{len(train)} training songs ({len(set(s.group for s in train))} artists), {len(test)} test songs",
        file=sys.stderr,
    )
    cache = default_feature_cache()

    rows: list[dict[str, Any]] = []
    for peer in peers:
        t = time.perf_counter()
        rows.append((run_librosa if peer == "librosa" else run_musicnn)(train, test, cache, folds, timing))
        rows[-1]["seconds"] = time.perf_counter() - t
        print(f"{rows[-1]['system']}: done in {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    if not args.no_edgeemo:
        rows += edgeemo_rows(test, args.run, args.bundle, timing)

    table = format_table(rows)
    print(table)
    for r in rows:
        if "hyperparameters" in r:
            chosen = "; ".join(f"{k}: {v['params']} (CV {v['cv_score']:.3f})" for k, v in r["hyperparameters"].items())
            print(f"\n{r['system']}: {chosen}")
    result = {
        "run": str(args.run),
        "bundle": str(args.bundle),
        "quick": args.quick,
        "n_train_songs": len(train),
        "n_train_artists": len({s.group for s in train}),
        "n_test_songs": len(test),
        "cv_folds": folds,
        "timing": f"median over {len(timing)} test clips of decoded audio -> quadrant, 1 thread; "
        "ms_per_clip is process CPU time, wall_ms_per_clip wall time (the machine may be shared)",
        "rows": rows,
        "table": table,
        "seconds": time.perf_counter() - started,
    }
    atomic_write_text(args.json, json.dumps(json_safe(result), indent=2) + "\n")
    print(f"\n{time.perf_counter() - started:.0f} s; results in {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
