"""``edgeemo evaluate``: score a checkpoint or an exported bundle on a run split or any dataset.

Owns resolving what to score (a ``.pt`` checkpoint via torch, or a bundle folder via
the torch-free runtime) and on what (a run's saved split, or every song of a
dataset), then prints the same metrics table for either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeemo.data.windows import build_windows, default_cache_dir
from edgeemo.errors import EdgeemoError
from edgeemo.evaluation import Predictor, predict_windowset, window_and_song_report
from edgeemo.features import FeatureConfig


def load_predictor(model_path: Path) -> tuple[Predictor, FeatureConfig, str]:
    """A numpy predictor, its FeatureConfig and a label for a checkpoint file or a bundle folder."""
    model_path = Path(model_path)
    if model_path.is_dir():
        from edgeemo.runtime import EmotionModel

        model = EmotionModel.load(model_path)
        return model.predict_windows, model.feature_config, f"bundle {model_path}"
    if model_path.suffix == ".pt":
        import torch

        from edgeemo.train.distill import load_model

        net, ck = load_model(model_path)

        def predict(x: Any) -> Any:
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()

        return predict, FeatureConfig.from_dict(ck["feature_config"]), f"{ck['stage']} checkpoint {model_path}"
    raise EdgeemoError(f"{model_path}: expected a .pt checkpoint or a bundle folder")


def _songs(model_path: Path, run_dir: Path | None, split: str, data_path: Path | None) -> tuple[list, str]:
    if data_path is not None:
        if str(data_path) == "builtin":
            from edgeemo.data.synth import builtin_corpus

            ss = builtin_corpus()
        else:
            from edgeemo.data.check import load_dataset

            ss = load_dataset(Path(data_path))
        return ss.songs, f"{ss.name}: all {len(ss.songs)} songs"
    if run_dir is None and model_path.suffix == ".pt" and (model_path.parent.parent / "split.json").is_file():
        run_dir = model_path.parent.parent
    if run_dir is None:
        raise EdgeemoError("say what to evaluate on: --run RUN_DIR (its split) or --data DATASET")
    from edgeemo.train.pipeline import open_run
    from edgeemo.train.rundata import prepare_run_data

    run = open_run(Path(run_dir), None, None)
    data = prepare_run_data(run.dir, run.cfg, run.sources)
    return data.splits[split], f"run {run.dir} {split} split ({len(data.splits[split])} songs)"


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


def evaluate_model(
    model_path: Path, *, run_dir: Path | None = None, split: str = "test", data_path: Path | None = None
) -> dict[str, Any]:
    predict, cfg, label = load_predictor(Path(model_path))
    songs, what = _songs(Path(model_path), run_dir, split, data_path)
    windows = build_windows(songs, cfg, default_cache_dir(), progress=True)
    preds = predict_windowset(predict, windows)
    report = window_and_song_report(windows, preds)
    header = f"{label}\non {what}: {len(windows)} windows" + (
        f" ({len(windows.failed)} songs failed to decode)" if windows.failed else ""
    )
    return {"model": label, "data": what, "metrics": report, "table": header + "\n" + metrics_table(report)}
