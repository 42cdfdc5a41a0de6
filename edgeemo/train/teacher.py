"""The ViT teacher stage: model set-up (partial fine-tuning, AdamW groups), losses, GAN mixing, training.

The loop itself is :func:`edgeemo.train.loop.fit`; this module only says what is
trained and how the loss is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from edgeemo.config import TEACHER_LOSSES, StageContext, TeacherConfig, to_plain
from edgeemo.errors import TrainingError
from edgeemo.train.augment import Augment, augment_batch
from edgeemo.train.datasets import ArrayWindows, TorchWindows
from edgeemo.train.loop import FitResult, ValenceArousalStage, fit, stage_fit_config
from edgeemo.train.models import (
    Regressor,
    build_model,
    freeze_for_finetuning,
    param_groups,
    rebuild_spec,
    teacher_spec,
)
from edgeemo.train.rundata import RunData, epoch_window_indices

LOSSES = TEACHER_LOSSES


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - CCC, averaged over the two dimensions (batch statistics)."""
    pm, tm = pred.mean(0), target.mean(0)
    pv, tv = pred.var(0, unbiased=False), target.var(0, unbiased=False)
    cov = ((pred - pm) * (target - tm)).mean(0)
    ccc = 2 * cov / (pv + tv + (pm - tm) ** 2 + 1e-8)
    return (1 - ccc).mean()


def regression_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return torch.nn.functional.mse_loss(pred, target)
    if kind == "ccc":
        return ccc_loss(pred, target)
    if kind == "mix":
        return torch.nn.functional.mse_loss(pred, target) + ccc_loss(pred, target)
    raise TrainingError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def config_teacher_spec(
    cfg: TeacherConfig, shape: tuple[int, int], *, weights: str | Path | None = None, from_scratch: bool = False
) -> dict[str, Any]:
    """The teacher architecture ``cfg`` describes for ``shape`` windows.

    ``weights``: a backbone file to start from instead of ``cfg.weights`` (the pretrain stage's);
    ``from_scratch`` leaves out any pretrained weights.
    """
    start = weights if weights is not None else cfg.weights
    return teacher_spec(
        cfg.arch,
        shape,
        depth=cfg.depth,
        pool=cfg.pool,
        patch=cfg.patch,
        stem=cfg.stem,
        drop_path=cfg.drop_path,
        pretrained=cfg.pretrained and not from_scratch,
        weights=None if from_scratch or start is None else str(start),
    )


def config_augment(cfg: TeacherConfig, shape: tuple[int, int]) -> Augment:
    """The teacher's batch augmentation; a setting ``shape`` windows cannot take is a TrainingError."""
    aug = Augment(cfg.augment_shift, cfg.freq_mask, cfg.time_mask)
    try:
        aug.check(*shape)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return aug


def build_teacher(cfg: TeacherConfig, shape: tuple[int, int], backbone: Path | None = None) -> Regressor:
    """The teacher of ``cfg``, frozen for partial fine-tuning when it starts from pretrained weights.

    ``backbone``: the pretrain stage's weights file, which the teacher then starts from.
    """
    model = build_model(config_teacher_spec(cfg, shape, weights=backbone))
    if cfg.pretrained or cfg.weights or backbone is not None:
        freeze_for_finetuning(model, cfg.trainable_blocks)
    return model


class TeacherStage(ValenceArousalStage):
    """Supervised regression of (valence, arousal)."""

    name = "teacher"

    def __init__(
        self, model: Regressor, cfg: TeacherConfig, ctx: StageContext, started_from: Path | None = None
    ) -> None:
        if cfg.loss not in LOSSES:
            raise TrainingError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
        self.model = model
        self.loss_kind = cfg.loss
        self.cfg = cfg
        self.ctx = ctx
        self.started_from = started_from
        self.augment = config_augment(cfg, ctx.features.shape)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x = augment_batch(x, self.augment)
        loss = regression_loss(self.loss_kind, self.model(x).float(), y)
        return loss, {"loss": loss.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "model_spec": rebuild_spec(self.model.spec),
            "feature_config": self.ctx.features.to_dict(),
            "stage_config": {"teacher": to_plain(self.cfg), "context": to_plain(self.ctx)},
            "started_from": None if self.started_from is None else str(self.started_from),
        }


GanSampler = Callable[[np.ndarray, int], np.ndarray]  # (labels (k, 2), seed) -> windows (k, 1, n_mels, n_frames)


def teacher_train_data(
    data: RunData, ctx: StageContext, gan_sampler: GanSampler | None = None, gan_ratio: float = 0.0
) -> Callable[[int], Dataset]:
    """Per-epoch training set: a fresh draw of real windows, plus GAN windows at ``gan_ratio`` of them."""
    train = data.windows("train")

    def make(epoch: int) -> Dataset:
        idx = epoch_window_indices(train, ctx.windows_per_song, ctx.seed, epoch)
        real: Dataset = TorchWindows(train, idx)
        n_fake = round(gan_ratio * len(idx)) if gan_sampler is not None else 0
        if n_fake == 0:
            return real
        rng = np.random.default_rng([ctx.seed, epoch, 7])
        labels = train.targets[rng.choice(len(train), n_fake)]  # conditioning follows the real label distribution
        fake = ArrayWindows(gan_sampler(labels, int(rng.integers(2**31))), labels)
        return ConcatDataset([real, fake])

    return make


def train_teacher(
    data: RunData,
    cfg: TeacherConfig,
    ctx: StageContext,
    out_dir: Path,
    *,
    backbone: Path | None = None,
    gan_sampler: GanSampler | None = None,
    gan_ratio: float = 0.0,
    progress: bool = True,
) -> FitResult:
    """Train (or resume) the teacher into ``out_dir`` (``best.pt``, ``last.pt``, ``metrics.jsonl``, ``curves.png``).

    ``backbone``: the pretrain stage's weights to start from; ``gan_sampler``: generated windows
    joining each epoch at ``gan_ratio`` of the real ones.
    """
    torch.manual_seed(ctx.seed)
    model = build_teacher(cfg, ctx.features.shape, backbone)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.head_lr, cfg.backbone_lr_mult, cfg.weight_decay), lr=cfg.head_lr
    )
    stage = TeacherStage(model, cfg, ctx, started_from=backbone)
    fit_cfg = stage_fit_config(cfg, ctx, progress)
    return fit(
        stage, optimizer, teacher_train_data(data, ctx, gan_sampler, gan_ratio), data.windows("val"), out_dir, fit_cfg
    )
