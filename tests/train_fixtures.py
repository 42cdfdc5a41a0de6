"""Small in-memory WindowSets and configs for fast training tests (no audio decoding)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edgeemo.config import RunConfig, StageContext, dotted_overrides
from edgeemo.data.types import Song
from edgeemo.data.windows import WindowSet
from edgeemo.features import FeatureConfig
from edgeemo.recipes import recipe_config

SMALL_FEATURES = FeatureConfig(n_mels=32, n_frames=64, hop_length=500)


def learnable_windowset(n_songs: int = 12, seed: int = 0, cfg: FeatureConfig = SMALL_FEATURES) -> WindowSet:
    """Songs whose frames encode their labels (low bands ~ valence, high bands ~ arousal) plus noise."""
    rng = np.random.default_rng(seed)
    songs, frames, index, targets = [], [], [], []
    n_total = cfg.n_frames + 3 * cfg.window_hop_frames  # 4 windows per song
    for s in range(n_songs):
        v, a = rng.uniform(-0.9, 0.9, 2)
        f = rng.normal(0, 0.3, (cfg.n_mels, n_total)).astype(np.float32)
        f[: cfg.n_mels // 2] += v
        f[cfg.n_mels // 2 :] += a
        songs.append(Song(id=f"s{s}", path=Path(f"/nonexistent/s{s}.wav"), valence=float(v), arousal=float(a)))
        frames.append(f)
        n = cfg.n_windows(n_total)
        index.append(np.stack([np.full(n, s), np.arange(n)], 1))
        targets.append(np.tile([v, a], (n, 1)))
    return WindowSet(
        cfg=cfg,
        songs=songs,
        frames=frames,
        index=np.concatenate(index).astype(np.int64),
        targets=np.concatenate(targets).astype(np.float32),
        failed=[],
    )


def tiny_config(**overrides: Any) -> RunConfig:
    """The tiny recipe made small enough for unit tests: 1-block ViT-Tiny, MobileViT-XXS, 32 x 64 windows.

    ``overrides`` take dotted names (``teacher.epochs``) or the flat names of edgeemo 0.1.
    """
    base = dict(
        features=SMALL_FEATURES,
        teacher_depth=1,
        teacher_epochs=2,
        student_epochs=2,
        batch_size=4,
        accum_steps=2,
        student_batch_size=8,
        train_windows_per_song=2,
        teacher_lr=1e-3,
        patience=None,
        device="cpu",
    )
    base.update(overrides)
    return recipe_config("tiny").replace(dotted_overrides(base))


def ctx(cfg: RunConfig) -> StageContext:
    """The stage context of ``cfg`` (seed, device, front end, windows per song)."""
    return StageContext.of(cfg)


class FakeRunData:
    """Quacks like :class:`edgeemo.train.rundata.RunData` for the stage functions."""

    def __init__(self, train: WindowSet, val: WindowSet, test: WindowSet | None = None) -> None:
        self._w = {"train": train, "val": val, "test": test or val}

    def windows(self, split: str, progress: bool = True) -> WindowSet:
        return self._w[split]


@contextmanager
def interrupted_on_call(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, n: int = 3) -> Iterator[None]:
    """Inside: the ``n``-th call of ``module.name`` raises KeyboardInterrupt (a user's Ctrl-C mid-run).

    Validation calls one such report per epoch, so ``n=3`` stops a run during epoch 3,
    after epochs 1-2 were checkpointed. The real function is back on exit.
    """
    real, calls = getattr(module, name), []

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupt)
    try:
        yield
    finally:
        monkeypatch.setattr(module, name, real)


def teacher_of(cfg: RunConfig):
    """``cfg``'s teacher as the teacher stage builds it."""
    from edgeemo.train.teacher import build_teacher

    return build_teacher(cfg.teacher, cfg.features.shape)


def fit_teacher(data, cfg: RunConfig, out_dir: Path, **kw: Any):
    """The teacher stage of ``cfg`` (its section and context) into ``out_dir``."""
    from edgeemo.train.teacher import train_teacher

    return train_teacher(data, cfg.teacher, ctx(cfg), out_dir, **kw)


def fit_student(data, cfg: RunConfig, teacher_checkpoint: Path, out_dir: Path, **kw: Any):
    """The student stage of ``cfg`` distilling ``teacher_checkpoint`` into ``out_dir``."""
    from edgeemo.train.distill import train_student

    return train_student(data, cfg.student, ctx(cfg), teacher_checkpoint, out_dir, **kw)


def random_musicnn():
    """An MSD-musicnn network with seeded random weights, frozen and in eval mode (no weights file needed)."""
    import torch

    from edgeemo.pretrained.musicnn import Musicnn

    torch.manual_seed(0)
    net = Musicnn().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
