"""``edgeemo evaluate``: score a checkpoint or an exported bundle on a run split or any dataset.

Owns resolving what to score (a ``.pt`` checkpoint via torch, or a bundle folder via
the torch-free runtime) and on what (a run's saved split, or every song of a
dataset), then prints the same metrics table for either. When the songs carry
quadrant labels (4Q), the report and table gain song-level quadrant metrics and the
confusion matrix; per-song predictions go to a CSV (``--predictions``) and the
confusion matrix to a PNG (``--confusion``) on request.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.atomic import atomic_write_text
from edgeemo.data.windows import build_windows, default_cache_dir
from edgeemo.errors import EdgeemoError
from edgeemo.evaluation import (
    SONG_PREDICTION_FIELDS,
    Predictor,
    QuadrantEvaluation,
    predict_windowset,
    song_predictions,
    song_quadrant_report,
    window_and_song_report,
)
from edgeemo.features import FeatureConfig
from edgeemo.runtime.stream import QUADRANTS


def load_predictor(model_path: Path) -> tuple[Predictor, FeatureConfig, str]:
    """A numpy predictor, its FeatureConfig and a label for a checkpoint file or a bundle folder."""
    model_path = Path(model_path)
    if model_path.is_dir():
        from edgeemo.runtime import EmotionModel

        model = EmotionModel.load(model_path)
        return model.predict_windows, model.feature_config, f"bundle {model_path}"
    if model_path.suffix == ".pt":
        import torch

        from edgeemo.train.models import load_model

        net, ck = load_model(model_path)

        def predict(x: Any) -> Any:
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()

        return predict, FeatureConfig.from_dict(ck["feature_config"]), f"{ck['stage']} checkpoint {model_path}"
    raise EdgeemoError(f"{model_path}: expected a .pt checkpoint or a bundle folder")


def _songs(model_path: Path, run_dir: Path | None, split: str, data_path: Path | None) -> tuple[list, list[str], str]:
    """The songs to score, the dataset's songs left out at loading (missing audio), and a description."""
    if data_path is not None:
        if str(data_path) == "builtin":
            from edgeemo.data.synth import builtin_corpus

            ss = builtin_corpus()
        else:
            from edgeemo.data.check import load_dataset

            ss = load_dataset(Path(data_path))
        return ss.songs, list(ss.skipped), f"{ss.name}: all {len(ss.songs)} songs"
    if run_dir is None and model_path.suffix == ".pt" and (model_path.parent.parent / "split.json").is_file():
        run_dir = model_path.parent.parent
    if run_dir is None:
        raise EdgeemoError("say what to evaluate on: --run RUN_DIR (its split) or --data DATASET")
    from edgeemo.train.pipeline import open_run
    from edgeemo.train.rundata import prepare_run_data

    run = open_run(Path(run_dir), None)
    data = prepare_run_data(run.dir, run.cfg.data)
    return data.splits[split], [], f"run {run.dir} {split} split ({len(data.splits[split])} songs)"


def metrics_table(report: dict[str, float]) -> str:
    rows = [f"{'level':<8}{'dim':<10}{'CCC':>8}{'RMSE':>8}{'r':>8}{'R2':>8}"]
    for level, prefix in (("window", ""), ("song", "song_")):
        if f"{prefix}ccc_mean" not in report:
            continue
        for dim in ("valence", "arousal"):
            rows.append(
                f"{level:<8}{dim:<10}{report[f'{prefix}ccc_{dim}']:>8.3f}{report[f'{prefix}rmse_{dim}']:>8.3f}"
                f"{report[f'{prefix}pearson_{dim}']:>8.3f}{report[f'{prefix}r2_{dim}']:>8.3f}"
            )
        rows.append(f"{level:<8}{'mean':<10}{report[f'{prefix}ccc_mean']:>8.3f}")
    return "\n".join(rows)


def quadrant_table(q: QuadrantEvaluation) -> str:
    """Song-level quadrant metrics, per-class F1 and the confusion matrix as text."""
    m = q.metrics
    skipped = f", {q.n_unlabelled} without a quadrant left out" if q.n_unlabelled else ""
    rows = [
        f"quadrants (song level, {m['n_songs']} songs{skipped})",
        f"{'accuracy':<10}{m['quadrant_accuracy']:>8.3f}   {'macro-F1':<10}{m['quadrant_macro_f1']:>8.3f}",
        f"{'V-AUC':<10}{m['valence_auc']:>8.3f}   {'A-AUC':<10}{m['arousal_auc']:>8.3f}",
        "F1   " + "  ".join(f"{lab} {QUADRANTS.get(lab, '')} {m[f'f1_{lab}']:.3f}" for lab in q.labels),
        "confusion (rows true, columns predicted)",
        f"{'':<10}" + "".join(f"{lab:>7}" for lab in q.labels),
    ]
    for lab, counts in zip(q.labels, q.confusion, strict=True):
        rows.append(f"{lab + ' ' + QUADRANTS.get(lab, ''):<10}" + "".join(f"{int(c):>7}" for c in counts))
    return "\n".join(rows)


def _check_writable(path: Path, option: str) -> None:
    """Fail before any work when an output's folder is missing (``option`` names the flag)."""
    if path.is_dir():
        raise EdgeemoError(f"{option} {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise EdgeemoError(f"{option} {path}: folder {path.parent} does not exist")


def write_song_predictions(rows: list[dict[str, Any]], path: Path) -> Path:
    """Per-song predictions as CSV with columns :data:`SONG_PREDICTION_FIELDS`."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SONG_PREDICTION_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.9g}" if isinstance(v, float) else v for k, v in r.items()})
    try:
        atomic_write_text(path, buf.getvalue())
    except OSError as exc:
        raise EdgeemoError(f"cannot write {path} ({exc.strerror or exc})") from None
    return path


def plot_confusion(q: QuadrantEvaluation, path: Path, *, title: str = "") -> Path:
    """The confusion matrix (counts, rows true, columns predicted) as a PNG; matplotlib is imported here."""
    from edgeemo.runtime.plot import require_matplotlib

    figure_cls, canvas_cls = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    names = [f"{lab}\n{QUADRANTS.get(lab, '')}" for lab in q.labels]
    cm = np.asarray(q.confusion)
    fig = figure_cls(figsize=(5.2, 4.6), dpi=100)
    canvas_cls(fig)
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, int(cm.max())))
    colorbar = fig.colorbar(image, ax=ax, label="songs")
    colorbar.locator = MaxNLocator(integer=True)
    colorbar.update_ticks()
    ticks = np.arange(len(names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="true")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), c in np.ndenumerate(cm):
        ax.text(j, i, str(int(c)), ha="center", va="center", color="white" if c > threshold else "black")
    m = q.metrics
    heading = f"accuracy {m['quadrant_accuracy']:.3f}, macro-F1 {m['quadrant_macro_f1']:.3f} ({m['n_songs']} songs)"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(str(path), format="png")
    except OSError as exc:
        raise EdgeemoError(f"cannot write {path} ({exc.strerror or exc})") from None
    return path


def evaluate_model(
    model_path: Path,
    *,
    run_dir: Path | None = None,
    split: str = "test",
    data_path: Path | None = None,
    predictions_csv: Path | None = None,
    confusion_png: Path | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Score ``model_path``: a dict with ``model``, ``data``, ``metrics`` (CCC etc.) and ``table``.

    When the songs carry quadrant labels it also holds ``quadrants``
    (:meth:`QuadrantEvaluation.to_dict`: song-level metrics plus the confusion matrix).

    ``predictions_csv`` receives one row per song (any dataset); ``confusion_png`` the
    quadrant confusion matrix, which needs quadrant-labelled songs (:class:`EdgeemoError`
    otherwise, raised before any audio is decoded).

    A song whose audio is missing or cannot be decoded makes the evaluation fail with an
    :class:`EdgeemoError` saying how many songs failed, unless ``skip_bad``: then the
    others are scored and the count goes into the table header and ``skipped``.
    """
    for out, option in ((predictions_csv, "--predictions"), (confusion_png, "--confusion")):
        if out is not None:
            _check_writable(Path(out), option)
    if confusion_png is not None:
        from edgeemo.runtime.plot import require_matplotlib

        require_matplotlib()  # fail before scoring anything when matplotlib is missing
    predict, cfg, label = load_predictor(Path(model_path))
    songs, missing, what = _songs(Path(model_path), run_dir, split, data_path)
    if confusion_png is not None and not any(s.quadrant for s in songs):
        raise EdgeemoError(f"--confusion needs quadrant labels (Q1..Q4); none of the {len(songs)} songs has one")
    windows = build_windows(songs, cfg, default_cache_dir(), progress=True)
    bad = missing + windows.failed
    if bad and not skip_bad:
        total = len(songs) + len(missing)
        raise EdgeemoError(
            f"{len(bad)} of {total} songs could not be used ({len(missing)} missing, {len(windows.failed)} "
            f"undecodable; first: {bad[0]}); fix them or pass --skip-bad to score the other {total - len(bad)}"
        )
    preds = predict_windowset(predict, windows)
    report = window_and_song_report(windows, preds)
    quadrants = song_quadrant_report(windows, preds)
    header = f"{label}\non {what}: {len(windows)} windows" + (
        f" ({len(bad)} songs skipped: {len(missing)} missing, {len(windows.failed)} undecodable)" if bad else ""
    )
    table = header + "\n" + metrics_table(report)
    if quadrants is not None:
        table += "\n\n" + quadrant_table(quadrants)
    if predictions_csv is not None:
        write_song_predictions(song_predictions(windows, preds), Path(predictions_csv))
    if confusion_png is not None:
        if quadrants is None:
            raise EdgeemoError("--confusion: none of the songs with a quadrant label could be decoded")
        plot_confusion(quadrants, Path(confusion_png), title=label)
    out: dict[str, Any] = {"model": label, "data": what, "metrics": report, "skipped": bad}
    if quadrants is not None:
        out["quadrants"] = quadrants.to_dict()
    if predictions_csv is not None:
        out["predictions"] = str(predictions_csv)
    return {**out, "table": table}
