"""The teacher and student stages of a run whose teacher is the musicnn-token ViT (``teacher.arch:
musicnn_token_vit``), in the run directory contract of :mod:`edgeemo.train.pipeline`.

Owns mapping the run's config sections onto :mod:`edgeemo.train.hybrid` (the teacher: depth,
drop path, epochs, ``head_lr``, weight decay, batch, patience, ``teacher.probe_alpha`` and
``teacher.views`` augmented views of each training song; the student: its section plus
``student.views`` (default: the teacher's), ``student.mixes`` (mixed views of pairs of training songs),
``student.crossfit`` (the labelled songs' targets from teachers that did not learn them),
``student.feature_weight`` (matching the musicnn
tokens the teacher reads) and ``student.unlabeled`` folders, whose
files the run's validation, test and left-out songs never join), loading MSD-musicnn (the
frozen front end) once per process, and giving such a teacher's predictions on the windows of a
:class:`~edgeemo.data.windows.WindowSet` (:func:`teacher_window_predictions`: the same windows,
matched by song and window number), so evaluation and export score it like any teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.config import StageContext, StudentConfig, TeacherConfig, resolve_path
from edgeemo.data.types import Song
from edgeemo.data.windows import WindowSet
from edgeemo.errors import TrainingError
from edgeemo.log import log
from edgeemo.train.hybrid import (
    TokenTeacherSettings,
    ViewStudentSettings,
    token_teacher_outputs,
    train_token_teacher,
    train_view_student,
)
from edgeemo.train.loop import FitResult
from edgeemo.train.models import Regressor, load_model
from edgeemo.train.tokenvit import TOKEN_VIT
from edgeemo.train.viewset import ViewSet, build_mix_viewset, build_viewset, concat_viewsets


@lru_cache(maxsize=1)
def musicnn_front_end() -> tuple[Any, str]:
    """The frozen MSD-musicnn network and the first 16 hex digits of its weights' digest (its ``weights_id``)."""
    from edgeemo.pretrained.musicnn import load_musicnn

    net = load_musicnn()
    return net, net.weights_id[:16]


def preflight(teacher: TeacherConfig, student: StudentConfig) -> None:
    """Before any training: the musicnn weights and the student's unlabeled folders are there (one-line errors)."""
    from edgeemo.pretrained.musicnn import default_weights_path

    weights = default_weights_path()
    if not weights.is_file():
        raise TrainingError(
            f"teacher.arch {TOKEN_VIT} runs MSD-musicnn's front end, and {weights} is missing: "
            "pip install --no-deps musicnn==0.1.0 && edgeemo pretrained import-musicnn"
        )
    for folder in student.unlabeled:
        path = resolve_path(folder)
        if not path.is_dir():
            raise TrainingError(
                f"student.unlabeled folder {folder} ({path}) does not exist; the Debian corpus is built by "
                "benchmarks/build_unlabeled_corpus.sh (see docs/cv.md)"
            )


def song_views(songs: Sequence[Song], ctx: StageContext, n_views: int, cache_dir: Path, progress: bool) -> ViewSet:
    """The songs' views (whole files only: a song cut from a longer file has no views)."""
    cut = next((s for s in songs if s.start_s != 0 or s.end_s is not None), None)
    if cut is not None:
        raise TrainingError(f"the musicnn-token teacher needs whole-file songs; song {cut.id} is an excerpt")
    model, weights_id = musicnn_front_end()
    labels = np.array([[s.valence, s.arousal] for s in songs], dtype=np.float32).reshape(-1, 2)
    data = build_viewset(
        [s.path for s in songs], labels, ctx.features, n_views, ctx.seed, model, weights_id, cache_dir,
        progress=progress, desc=f"views x{n_views}",
    )  # fmt: skip
    for line in data.failed[:3]:
        log(f"[views] skipped: {line}")
    return data


def teacher_settings(cfg: TeacherConfig, ctx: StageContext) -> TokenTeacherSettings:
    return TokenTeacherSettings(
        depth=cfg.depth or TokenTeacherSettings.depth,
        drop_path=cfg.drop_path,
        epochs=cfg.epochs,
        lr=cfg.head_lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        windows_per_entry=ctx.windows_per_song or TokenTeacherSettings.windows_per_entry,
        patience=cfg.patience,
        probe_alpha=cfg.probe_alpha,
    )


def train_hybrid_teacher(
    splits: dict[str, list[Song]], cfg: TeacherConfig, ctx: StageContext, out_dir: Path, cache_dir: Path,
    progress: bool = True,
) -> FitResult:  # fmt: skip
    """Fit the token ViT on the training songs' views; select on the validation songs (view 0)."""
    train = song_views(splits["train"], ctx, cfg.views, cache_dir, progress)
    val = song_views(splits["val"], ctx, 1, cache_dir, progress)
    _, result = train_token_teacher(
        train, val, out_dir, teacher_settings(cfg, ctx), seed=ctx.seed, device=ctx.device, progress=progress
    )
    return result


def train_hybrid_student(
    splits: dict[str, list[Song]],
    cfg: StudentConfig,
    teacher_cfg: TeacherConfig,
    ctx: StageContext,
    teacher_checkpoint: Path,
    out_dir: Path,
    cache_dir: Path,
    *,
    exclude: Sequence[Path] = (),
    backbone: Path | None = None,
    progress: bool = True,
) -> FitResult:
    """Distil the token teacher into the student on the training songs' views and the unlabeled files."""
    from edgeemo.data.unlabeled import find_unlabeled

    teacher, _ = load_model(teacher_checkpoint)
    train = song_views(splits["train"], ctx, cfg.views or teacher_cfg.views, cache_dir, progress)
    if cfg.unlabeled:
        found = find_unlabeled([resolve_path(p) for p in cfg.unlabeled], exclude=exclude)
        model, weights_id = musicnn_front_end()
        unlabeled = build_viewset(
            found.files, None, ctx.features, 1, ctx.seed, model, weights_id, cache_dir,
            max_windows=cfg.unlabeled_max_windows, max_seconds=cfg.unlabeled_max_seconds, progress=progress,
            desc="unlabeled views",
        )  # fmt: skip
        log(
            f"[student] {len(found.files)} unlabeled files ({found.excluded} excluded: this run's labelled "
            f"validation/test or left-out songs), {len(unlabeled)} windows"
        )
        train = concat_viewsets(train, unlabeled)
    if cfg.mixes:
        model, weights_id = musicnn_front_end()
        mixes = build_mix_viewset(
            [s.path for s in splits["train"]], ctx.features, cfg.mixes, ctx.seed, model, weights_id, cache_dir,
            progress=progress,
        )  # fmt: skip
        log(f"[student] {cfg.mixes} mixed view(s) of each training song, {len(mixes)} windows")
        train = concat_viewsets(train, mixes)
    val = song_views(splits["val"], ctx, 1, cache_dir, progress)
    teacher_out = token_teacher_outputs(teacher, train, ctx.device)
    if cfg.crossfit:
        labelled = train.item_of() < len(splits["train"])
        teacher_out[labelled] = crossfit_outputs(
            splits["train"], train.select(labelled), val, teacher_cfg, ctx, cfg.crossfit,
            Path(out_dir) / "crossfit", cache_dir, progress,
        )  # fmt: skip
    settings = ViewStudentSettings(
        arch=cfg.arch,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        windows_per_entry=cfg.windows_per_song or ctx.windows_per_song or TokenTeacherSettings.windows_per_entry,
        task_weight=cfg.task_weight,
        output_weight=cfg.output_weight,
        feature_weight=cfg.feature_weight,
        patience=cfg.patience,
        select=cfg.select,
        mixup=cfg.mixup,
        backbone_lr_mult=cfg.backbone_lr_mult,
    )
    _, result = train_view_student(
        train, teacher_out, val, out_dir, settings, backbone=backbone, seed=ctx.seed, device=ctx.device,
        progress=progress,
    )  # fmt: skip
    return result


def crossfit_outputs(
    songs: Sequence[Song],
    data: ViewSet,
    val: ViewSet,
    cfg: TeacherConfig,
    ctx: StageContext,
    k: int,
    out_dir: Path,
    cache_dir: Path,
    progress: bool = True,
) -> np.ndarray:
    """``(len(data), 2)``: for every window of ``data`` (windows of ``songs``; item ``i`` is ``songs[i]``), the
    output of the teacher trained on the other ``k - 1`` of ``k`` artist-grouped parts of ``songs``
    (stratified by quadrant when every song has one), each teacher a resumable fit under ``out_dir/part-<j>``."""
    from edgeemo.cv import grouped_folds

    if k < 2:
        raise TrainingError(f"student.crossfit needs at least 2 parts, got {k}")
    parts = grouped_folds(songs, k, ctx.seed, stratify=all(s.quadrant for s in songs))
    items = data.item_of()
    out = np.full((len(data), 2), np.nan, np.float32)
    for part in parts:
        log(f"[student] cross-fitted teacher {part.index + 1}/{k}: {len(part.train)} songs, scoring {len(part.test)}")
        fit_on = song_views([songs[i] for i in part.train], ctx, cfg.views, cache_dir, progress)
        model, _ = train_token_teacher(
            fit_on, val, Path(out_dir) / f"part-{part.index}", teacher_settings(cfg, ctx), seed=ctx.seed,
            device=ctx.device, progress=progress,
        )  # fmt: skip
        rows = np.isin(items, part.test)
        out[rows] = token_teacher_outputs(model, data.select(rows), ctx.device)
    return out


def teacher_window_predictions(model: Regressor, windows: WindowSet, cache_dir: Path) -> np.ndarray:
    """``(len(windows), 2)``: the token teacher on exactly the windows of ``windows`` (view 0 of its songs)."""
    ctx = StageContext(windows.cfg)
    views = song_views(windows.songs, ctx, 1, cache_dir, progress=False)  # one entry per song
    song_of = views.item_of()
    expected = np.bincount(windows.index[:, 0], minlength=len(windows.songs))
    got = np.bincount(song_of, minlength=len(windows.songs))
    if not np.array_equal(expected, got):
        bad = int(np.flatnonzero(expected != got)[0])
        raise TrainingError(
            f"song {windows.songs[bad].id}: {expected[bad]} log-mel windows but {got[bad]} musicnn-token windows"
        )
    row_of = {(int(s), int(w)): row for row, (s, w) in enumerate(zip(song_of, views.index[:, 1], strict=True))}
    preds = token_teacher_outputs(model, views)
    return preds[[row_of[(int(s), int(w))] for s, w in windows.index]]
