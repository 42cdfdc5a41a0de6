"""A training recipe under the cross-validation protocol, end to end: ``edgeemo cv --system recipe:NAME[@ROLE]``.

For each fold the recipe's config gets ``data.exclude`` = the fold's held-out song ids, so the
pipeline trains on every other song (the recipe's other data, e.g. the built-in corpus or
unlabeled audio, joins it; held-out songs are in no split and never pretrained on), then the run
is exported with int8, and the held-out songs are scored by ``ROLE``:

- ``int8`` (default): the bundle's int8 model, as the runtime ships it;
- ``fp32``: the bundle's fp32 ``model.onnx``;
- ``teacher``: the run's teacher checkpoint (torch).

A song's score is the mean of its 2 Hz windows (as ``edgeemo evaluate``). The run of a fold is
shared by the three roles and lives in ``<work>/recipe-runs/<recipe>-<config digest>/``; it resumes
from its checkpoints when the CV is run again, and its bundle is exported once. The export gate is
not applied here (a fold's figures are what is measured); the shipped model's export applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.config import RunConfig
from edgeemo.cv import SongScores
from edgeemo.cv_systems import EndToEndSystem, register_system
from edgeemo.data.types import Song
from edgeemo.errors import EdgeemoError
from edgeemo.log import log

ROLES = ("int8", "fp32", "teacher")
CV_EXPORT = {"int8": True, "min_compression": 0.0, "min_retention": -1e9, "max_int8_drop": 1e9}


def fold_config(recipe: str, test: Sequence[Song]) -> RunConfig:
    """The recipe's config with the fold's held-out songs left out of the run."""
    from edgeemo.recipes import recipe_config

    return recipe_config(recipe).replace({"data.exclude": sorted(s.id for s in test)})


def train_fold(cfg: RunConfig, root: Path, progress: bool = False) -> tuple[Path, Path]:
    """Train (or resume) the fold's run under ``root`` and export its bundle once; returns (run dir, bundle dir)."""
    from edgeemo.exporting.export import export_run
    from edgeemo.train.pipeline import open_run, train_all

    run_dir = root / f"{cfg.recipe}-{cfg.digest()}"
    bundle = run_dir / "bundle"
    run = open_run(run_dir, cfg)
    train_all(run, progress=progress)
    if not (bundle / "card.json").is_file():  # written last and atomically: present means complete
        log(f"[cv] exporting {run_dir.name}")
        export_run(run_dir, bundle, overrides=CV_EXPORT)
    return run_dir, bundle


def score_songs(run_dir: Path, bundle: Path, test: Sequence[Song], role: str) -> np.ndarray:
    """``(n_test, 2)``: each held-out song's mean (valence, arousal) over its windows, by ``role``'s model."""
    from edgeemo.bundle import FP32_NAME, load_card
    from edgeemo.data.windows import build_windows, default_cache_dir
    from edgeemo.evaluation import predict_windowset
    from edgeemo.exporting.onnx import onnx_predictor
    from edgeemo.features import FeatureConfig
    from edgeemo.train.models import load_model

    card = load_card(bundle)
    features = FeatureConfig.from_dict(card["feature_config"])
    windows = build_windows(list(test), features, default_cache_dir(), strict=True, progress=False)
    if role == "teacher":
        from edgeemo.train.pipeline import model_window_predictions

        model, _ = load_model(run_dir / "teacher" / "best.pt")
        return windows.song_means(model_window_predictions(model, windows, default_cache_dir()))
    name = card["default_model"] if role == "int8" else FP32_NAME
    return windows.song_means(predict_windowset(onnx_predictor(bundle / name), windows))


def recipe_system(spec: str) -> EndToEndSystem:
    """The CV system ``recipe:NAME[@ROLE]``: train recipe NAME on each fold's training songs, score its test songs."""
    from edgeemo.recipes import get_recipe

    name, _, role = spec.partition("@")
    role = role or "int8"
    if role not in ROLES:
        raise EdgeemoError(f"recipe system role {role!r} is not one of {', '.join(ROLES)} (recipe:NAME@ROLE)")
    recipe = get_recipe(name)
    sources = {s.kind for s in recipe.config.data.sources}
    if "quadrants" not in sources:
        kinds = ", ".join(sorted(sources))
        raise EdgeemoError(f"recipe {name} trains on {kinds}: no quadrant dataset to cross-validate")

    def fit_score(train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores:
        cfg = fold_config(name, test)
        run_dir, bundle = train_fold(cfg, Path(workdir).parent.parent / "recipe-runs")
        _check_fold(run_dir, train, test)
        scores = score_songs(run_dir, bundle, test, role)
        return SongScores(scores[:, 0], scores[:, 1], details={"run": run_dir.name, "config_digest": cfg.digest()})

    label = {"int8": "int8 student", "fp32": "fp32 student", "teacher": "teacher"}[role]
    return EndToEndSystem(
        f"edgeemo {name} {label}",
        f"recipe-{name}-{recipe.config.digest()}-{role}",
        fit_score,
        extra={"recipe": name, "recipe_digest": recipe.config.digest(), "role": role},
    )


def _check_fold(run_dir: Path, train: Sequence[Song], test: Sequence[Song]) -> None:
    """The run left out exactly the fold's test songs and trained or validated on none of them."""
    import json

    split: dict[str, Any] = json.loads((run_dir / "split.json").read_text())
    used = {i for k in ("train", "val", "test") for i in split[k]}
    leaked = sorted(used & {s.id for s in test})
    if leaked:
        raise EdgeemoError(f"{run_dir}: held-out song {leaked[0]} is in the run's split")
    missing = sorted({s.id for s in train} - used)
    if missing:
        raise EdgeemoError(f"{run_dir}: the recipe's data lacks fold training song {missing[0]} (another dataset?)")


def register() -> None:
    """Make ``recipe:NAME[@ROLE]`` a system spec of ``edgeemo cv``."""
    register_system("recipe", recipe_system)
