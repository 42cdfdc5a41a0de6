"""The hybrid musicnn-ViT teacher and its view-distilled student under the CV protocol: ``edgeemo cv --system
hybrid:ROLE[,key=value...]``.

``ROLE`` is ``teacher`` (the token ViT over musicnn's front end) or ``student`` (the MobileViT
student distilled from it, fp32 torch). ``key=value`` pairs override :class:`HybridSettings`
(e.g. ``hybrid:teacher,depth=4,teacher_epochs=8``; ``unlabeled=PATH+PATH`` for the student's
unlabeled folders). For each fold: the fold's training songs are split by artist into fit and
validation parts (``val_fraction``), every fold-training song is rendered in ``views`` augmented
views (cached per file and view, shared by all folds), the teacher is fitted and selected on the
validation part, then the student learns the teacher's outputs on every window of every view of
the fold's training songs and the unlabeled audio, plus the labels. A fold's run lives in
``<work>/hybrid-runs/<settings digest>/fold-<k>`` and resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.cv import SongScores
from edgeemo.cv_systems import EndToEndSystem, register_system
from edgeemo.data.types import Song
from edgeemo.errors import EdgeemoError
from edgeemo.log import log

ROLES = ("teacher", "student")


@dataclass(frozen=True)
class HybridSettings:
    views: int = 3
    val_fraction: float = 0.1
    seed: int = 0
    # teacher
    dim: int = 192
    depth: int = 6
    heads: int = 3
    drop_path: float = 0.1
    teacher_epochs: int = 10
    teacher_lr: float = 3e-4
    teacher_windows: int = 12
    # student
    unlabeled: str = ""  # folders joined by '+'
    unlabeled_views: int = 2
    unlabeled_max_windows: int = 60
    student_epochs: int = 6
    student_lr: float = 2e-3
    student_windows: int = 6
    task_weight: float = 0.5
    output_weight: float = 1.0
    backbone: str = ""

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def parse_spec(spec: str) -> tuple[str, HybridSettings]:
    role, *pairs = spec.split(",")
    if role not in ROLES:
        raise EdgeemoError(f"hybrid system role {role!r} is not one of {', '.join(ROLES)} (hybrid:ROLE[,k=v...])")
    fields = {f.name: f for f in dataclasses.fields(HybridSettings)}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise EdgeemoError(
                f"hybrid system setting {pair!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}"
            )
        kind = type(getattr(HybridSettings(), key))
        try:
            values[key] = kind(value)
        except ValueError:
            raise EdgeemoError(f"hybrid system setting {key}={value!r} is not a {kind.__name__}") from None
    return role, HybridSettings(**values)


def _features():
    from edgeemo.recipes import recipe_config

    return recipe_config("4q-m1sp").data.features


def _fit_val_split(train: Sequence[Song], fraction: float, seed: int) -> tuple[list[Song], list[Song]]:
    groups = sorted({s.group for s in train})
    rng = np.random.default_rng(seed)
    n_val = max(1, round(fraction * len(groups)))
    val_groups = set(rng.permutation(groups)[:n_val].tolist())
    return [s for s in train if s.group not in val_groups], [s for s in train if s.group in val_groups]


def _labels(songs: Sequence[Song]) -> np.ndarray:
    return np.array([[s.valence, s.arousal] for s in songs], dtype=np.float32).reshape(-1, 2)


def fold_run(
    settings: HybridSettings, role: str, train: Sequence[Song], test: Sequence[Song], run_dir: Path
) -> np.ndarray:
    """Train (or resume) the fold's teacher, and for ``student`` its student; ``(n_test, 2)`` song scores."""
    import torch

    from edgeemo.config import default_cache_root
    from edgeemo.data.unlabeled import find_unlabeled
    from edgeemo.filehash import sha256_file
    from edgeemo.pretrained.musicnn import default_weights_path, load_musicnn
    from edgeemo.train.hybrid import (
        TokenTeacherSettings,
        ViewStudentSettings,
        token_teacher_outputs,
        train_token_teacher,
        train_view_student,
    )
    from edgeemo.train.viewset import build_viewset, concat_viewsets

    torch.set_num_threads(max(1, torch.get_num_threads()))
    features = _features()
    musicnn = load_musicnn()
    weights_id = sha256_file(default_weights_path())[:16]
    cache = default_cache_root()
    fit_songs, val_songs = _fit_val_split(train, settings.val_fraction, settings.seed)

    def views_of(songs: Sequence[Song], n_views: int, desc: str) -> Any:
        return build_viewset(
            [s.path for s in songs],
            _labels(songs),
            features,
            n_views,
            settings.seed,
            musicnn,
            weights_id,
            cache,
            progress=False,
            desc=desc,
        )

    fit_vs = views_of(fit_songs, settings.views, "fit")
    val_vs, test_vs = views_of(val_songs, 1, "val"), views_of(test, 1, "test")
    teacher_cfg = TokenTeacherSettings(
        dim=settings.dim,
        depth=settings.depth,
        heads=settings.heads,
        drop_path=settings.drop_path,
        epochs=settings.teacher_epochs,
        lr=settings.teacher_lr,
        windows_per_entry=settings.teacher_windows,
    )
    teacher, res = train_token_teacher(fit_vs, val_vs, run_dir / "teacher", teacher_cfg, seed=settings.seed)
    log(f"[hybrid] teacher best epoch {res.best_epoch}: val {json.dumps(res.best_metrics)}")
    if role == "teacher":
        return test_vs.item_means(token_teacher_outputs(teacher, test_vs))
    train_vs = fit_vs
    if settings.unlabeled:
        files = find_unlabeled([Path(p) for p in settings.unlabeled.split("+")]).files
        unl = build_viewset(
            files,
            None,
            features,
            settings.unlabeled_views,
            settings.seed,
            musicnn,
            weights_id,
            cache,
            max_windows=settings.unlabeled_max_windows,
            progress=False,
            desc="unlabeled",
        )
        train_vs = concat_viewsets(fit_vs, unl)
    teacher_out = token_teacher_outputs(teacher, train_vs)
    student_cfg = ViewStudentSettings(
        epochs=settings.student_epochs,
        lr=settings.student_lr,
        windows_per_entry=settings.student_windows,
        task_weight=settings.task_weight,
        output_weight=settings.output_weight,
    )
    backbone = Path(settings.backbone) if settings.backbone else None
    student, res = train_view_student(
        train_vs, teacher_out, val_vs, run_dir / "student", student_cfg, backbone=backbone, seed=settings.seed
    )
    log(f"[hybrid] student best epoch {res.best_epoch}: val {json.dumps(res.best_metrics)}")
    preds = []
    with torch.no_grad():
        for i in range(0, len(test_vs), 64):
            idx = range(i, min(len(test_vs), i + 64))
            x = torch.from_numpy(np.stack([test_vs.mel(j) for j in idx])[:, None])
            preds.append(student(x).numpy())
    return test_vs.item_means(np.concatenate(preds))


def hybrid_system(spec: str) -> EndToEndSystem:
    role, settings = parse_spec(spec)

    def fit_score(train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores:
        fold = Path(workdir).name
        run_dir = Path(workdir).parent.parent / "hybrid-runs" / settings.digest() / fold
        scores = fold_run(settings, role, train, test, run_dir)
        return SongScores(scores[:, 0], scores[:, 1], details={"run": str(run_dir), "settings": settings.digest()})

    return EndToEndSystem(
        f"edgeemo hybrid {role} [{spec.partition(',')[2] or 'defaults'}]",
        f"hybrid-{role}-{settings.digest()}",
        fit_score,
        extra={"settings": dataclasses.asdict(settings), "role": role},
    )


def register() -> None:
    """Make ``hybrid:ROLE[,k=v...]`` a system spec of ``edgeemo cv``."""
    register_system("hybrid", hybrid_system)
