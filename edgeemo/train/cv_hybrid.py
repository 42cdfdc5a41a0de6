"""The hybrid musicnn-ViT teacher and its view-distilled student under the CV protocol.

``edgeemo cv --system hybrid:ROLE[,key=value...]``. ``ROLE`` is ``teacher`` (the token ViT over
musicnn's front end), ``student`` (the MobileViT student distilled from it, fp32 torch) or
``int8`` (that student exported to ONNX and quantised as ``edgeemo export`` does: every
candidate int8 recipe, the pick made on the fold's validation songs). ``key=value`` pairs
override :class:`HybridSettings` (e.g. ``hybrid:teacher,depth=4,teacher_epochs=8``;
``unlabeled=PATH+PATH`` for the student's unlabeled folders).

For each fold: the fold's training songs are split by artist into fit and validation parts
(``val_fraction``); every fit song is rendered in ``views`` augmented views (cached per file
and view, shared by all folds); the teacher is fitted and selected on the validation part;
then the student learns the teacher's outputs on every window of every view of the fit songs
and the unlabeled audio, plus the labels. A fold's run lives in
``<work>/hybrid-runs/`` (the teacher's keyed by the settings it depends on, so systems that differ
only in their student share it) and resumes from its checkpoints.
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

ROLES = ("teacher", "student", "int8")
MAX_INT8_DROP = 0.02  # the export default (export.max_int8_drop)


@dataclass(frozen=True)
class HybridSettings:
    views: int = 3
    val_fraction: float = 0.1
    seed: int = 0
    # teacher
    dim: int = 192
    depth: int = 8
    heads: int = 3
    drop_path: float = 0.1
    teacher_epochs: int = 10
    teacher_lr: float = 3e-4
    teacher_windows: int = 12
    # student
    unlabeled: str = ""  # folders joined by '+'
    unlabeled_views: int = 2
    unlabeled_max_windows: int = 60
    unlabeled_max_seconds: float = 30.0
    student_epochs: int = 6
    student_lr: float = 2e-3
    student_windows: int = 6
    task_weight: float = 0.5
    output_weight: float = 1.0
    backbone: str = ""

    def digest(self) -> str:
        return _digest(dataclasses.asdict(self))

    def teacher_digest(self) -> str:
        """Of the settings the teacher depends on: systems that differ only in their student share its runs."""
        return _digest({k: v for k, v in dataclasses.asdict(self).items() if k in TEACHER_KEYS})


TEACHER_KEYS = (
    "views",
    "val_fraction",
    "seed",
    "dim",
    "depth",
    "heads",
    "drop_path",
    "teacher_epochs",
    "teacher_lr",
    "teacher_windows",
)


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


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
    settings: HybridSettings, role: str, train: Sequence[Song], test: Sequence[Song], runs: Path, fold: str
) -> np.ndarray:
    """Train (or resume) the fold's teacher, and for a student role its student; ``(n_test, 2)`` song scores.

    The teacher's run is ``runs/teacher-<teacher digest>/<fold>``, the student's ``runs/<digest>/<fold>``.
    """
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
    teacher, res = train_token_teacher(
        fit_vs, val_vs, runs / f"teacher-{settings.teacher_digest()}" / fold, teacher_cfg, seed=settings.seed
    )
    log(f"[hybrid] teacher best epoch {res.best_epoch}: val {json.dumps(res.best_metrics)}")
    run_dir = runs / settings.digest() / fold
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
            max_seconds=settings.unlabeled_max_seconds,
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
    if role == "int8":
        from edgeemo.exporting.onnx import onnx_predictor

        predict = onnx_predictor(int8_student(student, fit_vs, val_vs, run_dir / "student" / "model.int8.onnx"))
    else:

        def predict(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return student(torch.from_numpy(x)).numpy()

    return test_vs.item_means(predict_mel(predict, test_vs))


def predict_mel(predict: Any, data: Any, batch_size: int = 64) -> np.ndarray:
    """``(len(data), 2)``: ``predict`` over every student window of a view set, in batches."""
    out = [
        predict(np.stack([data.mel(j) for j in range(i, min(len(data), i + batch_size))])[:, None])
        for i in range(0, len(data), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def int8_student(student: Any, train: Any, val: Any, out: Path, calibration: int = 256) -> Path:
    """The student as int8 ONNX at ``out`` (kept; reused when there): every candidate recipe is tried and
    :func:`edgeemo.exporting.export.pick_recipe` picks on the validation windows, as ``edgeemo export`` does."""
    import shutil
    import tempfile

    from edgeemo.exporting.export import pick_recipe
    from edgeemo.exporting.onnx import export_onnx, onnx_predictor
    from edgeemo.exporting.quantize import CANDIDATES, median_latency_ms, quantize_int8
    from edgeemo.train.hybrid import viewset_report

    if out.is_file():
        return out
    shape = train.features.shape
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(train), size=min(calibration, len(train)), replace=False))
    calib = np.stack([train.mel(int(i)) for i in idx])[:, None]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fp32 = export_onnx(student, tmp / "model.onnx", shape)
        fp32_ccc = viewset_report(val, predict_mel(onnx_predictor(fp32), val))["ccc_mean"]
        rows: list[dict[str, Any]] = []
        for i, recipe in enumerate(CANDIDATES):
            path = tmp / f"cand{i}.int8.onnx"
            try:
                quantize_int8(fp32, path, calib, recipe)
            except Exception as exc:  # a recipe the quantiser cannot handle is skipped, as export does
                rows.append({"error": f"{type(exc).__name__}: {exc}"})
                continue
            ccc = viewset_report(val, predict_mel(onnx_predictor(path), val))["ccc_mean"]
            rows.append(
                {
                    "drop": fp32_ccc - ccc,
                    "latency_ms": median_latency_ms(path, shape)[0],
                    "bytes": path.stat().st_size,
                    "path": path,
                    "label": recipe.label,
                }
            )
        best = pick_recipe(rows, MAX_INT8_DROP)
        log(f"[hybrid] int8 {best['label']}: val CCC drop {best['drop']:+.4f}, {best['bytes']} bytes")
        tmp_out = out.with_name(out.name + ".tmp")
        shutil.copyfile(best["path"], tmp_out)
        tmp_out.replace(out)
    return out


def hybrid_system(spec: str) -> EndToEndSystem:
    role, settings = parse_spec(spec)

    def fit_score(train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores:
        fold = Path(workdir).name
        runs = Path(workdir).parent.parent / "hybrid-runs"
        scores = fold_run(settings, role, train, test, runs, fold)
        return SongScores(scores[:, 0], scores[:, 1], details={"settings": settings.digest()})

    return EndToEndSystem(
        f"edgeemo hybrid {role} [{spec.partition(',')[2] or 'defaults'}]",
        f"hybrid-{role}-{settings.digest()}",
        fit_score,
        extra={"settings": dataclasses.asdict(settings), "role": role},
    )


def register() -> None:
    """Make ``hybrid:ROLE[,k=v...]`` a system spec of ``edgeemo cv``."""
    register_system("hybrid", hybrid_system)
