"""A training recipe under the cross-validation protocol, end to end: ``edgeemo cv --system
recipe:NAME[,FIELD=VALUE...][@ROLE]``.

``FIELD=VALUE`` pairs change the recipe's config for the CV (dotted names, as ``--set``: e.g.
``recipe:4q-hybrid,teacher.depth=4,student.epochs=10@int8``; a value is read as JSON when it is JSON,
else as text): a variation is measured under the same protocol without registering a recipe. Such
a row's ``recipe_digest`` is the changed config's, so it never stands for the recipe on a card.

The CV's songs are one of the recipe's datasets: a quadrant-labelled one (``--data`` a 4Q folder)
or the built-in corpus (``--data builtin``; the recipe's ``data.corpus_*`` must be the CV's). For
each fold the recipe's config gets ``data.exclude`` = the fold's held-out song ids, so the
pipeline trains on every other song (the recipe's other data, e.g. the built-in corpus or
unlabeled audio, joins it; held-out songs are in no split and never pretrained on), then the run
is exported with int8, and the held-out songs are scored by ``ROLE``:

- ``int8`` (default): the bundle's int8 model, as the runtime ships it;
- ``fp32``: the bundle's fp32 ``model.onnx``;
- ``teacher``: the run's teacher checkpoint (torch). This role trains the fold's run only up to
  its teacher (no student, no export), so a CV of teachers alone costs the teacher stage.

A song's score is the mean of its 2 Hz windows (as ``edgeemo evaluate``). The run of a fold is
shared by the three roles and lives in ``<work>/recipe-runs/<recipe>-<config digest>/``; it resumes
from its checkpoints when the CV is run again (a student role after the teacher role trains only
the student), and its bundle is exported once. The export gate is
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


def fold_config(recipe: str, test: Sequence[Song], overrides: dict[str, Any] | None = None) -> RunConfig:
    """The recipe's config (with ``overrides``) with the fold's held-out songs left out of the run."""
    from edgeemo.recipes import recipe_config

    return recipe_config(recipe).replace(overrides or {}).replace({"data.exclude": sorted(s.id for s in test)})


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings -> ``{field: value}`` (:func:`edgeemo.config.parse_value` values)."""
    from edgeemo.config import parse_value

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key or "." not in key:
            raise EdgeemoError(f"recipe system setting {pair!r}: expected SECTION.FIELD=VALUE")
        if key == "data.exclude":
            raise EdgeemoError("recipe system setting data.exclude: the CV sets it (the fold's held-out songs)")
        out[key] = parse_value(text)
    return out


def train_fold(cfg: RunConfig, root: Path, progress: bool = False, *, teacher_only: bool = False) -> tuple[Path, Path]:
    """Train (or resume) the fold's run under ``root`` on every core and export its bundle once; returns
    (run dir, bundle dir). ``teacher_only`` stops after the teacher stage (no student, no bundle). The
    thread limits of the CV's one-thread timings are restored after."""
    from edgeemo.clipfeatures import all_cores, thread_count
    from edgeemo.exporting.export import export_run
    from edgeemo.train.pipeline import STAGES, open_run, train_all

    run_dir = root / f"{cfg.recipe}-{cfg.digest()}"
    bundle = run_dir / "bundle"
    with thread_count(all_cores()):
        run = open_run(run_dir, cfg)
        train_all(run, stages=STAGES[: STAGES.index("teacher") + 1] if teacher_only else STAGES, progress=progress)
        if not teacher_only and not (bundle / "card.json").is_file():  # written last and atomically
            log(f"[cv] exporting {run_dir.name}")
            export_run(run_dir, bundle, overrides=CV_EXPORT)
    return run_dir, bundle


def score_songs(run_dir: Path, bundle: Path, test: Sequence[Song], role: str) -> np.ndarray:
    """``(n_test, 2)``: each held-out song's mean (valence, arousal) over its windows, by ``role``'s model
    (the teacher's from ``run_dir``, which needs no bundle; the students' from ``bundle``)."""
    from edgeemo.bundle import FP32_NAME, load_card
    from edgeemo.data.windows import build_windows, default_cache_dir
    from edgeemo.evaluation import predict_windowset
    from edgeemo.exporting.onnx import onnx_predictor
    from edgeemo.train.models import load_model
    from edgeemo.train.pipeline import read_run_config

    features = read_run_config(run_dir / "config.json").features  # the features the bundle's card records
    windows = build_windows(list(test), features, default_cache_dir(), strict=True, progress=False)
    if role == "teacher":
        from edgeemo.train.pipeline import model_window_predictions

        model, _ = load_model(run_dir / "teacher" / "best.pt")
        return windows.song_means(model_window_predictions(model, windows, default_cache_dir()))
    card = load_card(bundle)
    name = card["default_model"] if role == "int8" else FP32_NAME
    return windows.song_means(predict_windowset(onnx_predictor(bundle / name), windows))


def recipe_system(spec: str) -> EndToEndSystem:
    """The CV system ``recipe:NAME[,FIELD=VALUE...][@ROLE]``: train recipe NAME (so changed) on each fold's
    training songs, score its test songs."""
    from edgeemo.recipes import get_recipe

    head, _, role = spec.partition("@")
    name, *pairs = head.split(",")
    overrides = parse_overrides(pairs)
    role = role or "int8"
    if role not in ROLES:
        raise EdgeemoError(f"recipe system role {role!r} is not one of {', '.join(ROLES)} (recipe:NAME@ROLE)")
    recipe = get_recipe(name)
    config = recipe.config.replace(overrides)  # bad fields fail here, before any fold runs
    sources = {s.kind for s in config.data.sources}
    if not sources & {"quadrants", "builtin"}:
        kinds = ", ".join(sorted(sources))
        raise EdgeemoError(f"recipe {name} trains on {kinds}: no quadrant dataset or built-in corpus to cross-validate")

    def fit_score(train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores:
        cfg = fold_config(name, test, overrides)
        run_dir, bundle = train_fold(cfg, Path(workdir).parent.parent / "recipe-runs", teacher_only=role == "teacher")
        _check_fold(run_dir, train, test)
        scores = score_songs(run_dir, bundle, test, role)
        return SongScores(scores[:, 0], scores[:, 1], details={"run": run_dir.name, "config_digest": cfg.digest()})

    label = {"int8": "int8 student", "fp32": "fp32 student", "teacher": "teacher"}[role]
    changed = f" [{', '.join(pairs)}]" if pairs else ""
    return EndToEndSystem(
        f"edgeemo {name}{changed} {label}",
        f"recipe-{name}-{config.digest()}-{role}",
        fit_score,
        extra={
            "recipe": name,
            "recipe_digest": config.digest(),
            "role": role,
            **({"overrides": overrides} if overrides else {}),
        },
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
    """Make ``recipe:NAME[,FIELD=VALUE...][@ROLE]`` a system spec of ``edgeemo cv``."""
    register_system("recipe", recipe_system)
