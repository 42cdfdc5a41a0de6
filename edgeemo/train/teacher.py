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

from edgeemo.errors import TrainingError
from edgeemo.presets import TrainConfig
from edgeemo.train.augment import Augment, augment_batch
from edgeemo.train.datasets import ArrayWindows, TorchWindows
from edgeemo.train.loop import FitConfig, FitResult, fit
from edgeemo.train.models import (
    Regressor,
    build_model,
    freeze_for_finetuning,
    param_groups,
    rebuild_spec,
    teacher_spec,
)
from edgeemo.train.rundata import RunData, epoch_window_indices

LOSSES = ("mse", "ccc", "mix")


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


def config_teacher_spec(cfg: TrainConfig, *, from_scratch: bool = False) -> dict[str, Any]:
    """The teacher architecture ``cfg`` describes; ``from_scratch`` leaves out its pretrained weights."""
    return teacher_spec(
        cfg.teacher_arch,
        cfg.features.shape,
        depth=cfg.teacher_depth,
        pool=cfg.teacher_pool,
        patch=cfg.teacher_patch,
        stem=cfg.teacher_stem,
        drop_path=cfg.teacher_drop_path,
        pretrained=cfg.teacher_pretrained and not from_scratch,
        weights=None if from_scratch else cfg.teacher_weights,
    )


def config_augment(cfg: TrainConfig) -> Augment:
    """The teacher's batch augmentation of ``cfg``; a setting the windows cannot take is a TrainingError."""
    aug = Augment(cfg.augment_shift, cfg.augment_freq_mask, cfg.augment_time_mask)
    try:
        aug.check(cfg.features.n_mels, cfg.features.n_frames)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return aug


def build_teacher(cfg: TrainConfig) -> Regressor:
    """The teacher of ``cfg``, frozen for partial fine-tuning when it starts from pretrained weights."""
    model = build_model(config_teacher_spec(cfg))
    if cfg.teacher_pretrained or cfg.teacher_weights:
        freeze_for_finetuning(model, cfg.teacher_trainable_blocks)
    return model


class TeacherStage:
    """Supervised regression of (valence, arousal)."""

    name = "teacher"

    def __init__(self, model: Regressor, loss_kind: str, cfg: TrainConfig) -> None:
        if loss_kind not in LOSSES:
            raise TrainingError(f"unknown loss {loss_kind!r}; choose one of {', '.join(LOSSES)}")
        self.model = model
        self.loss_kind = loss_kind
        self.cfg = cfg
        self.augment = config_augment(cfg)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x = augment_batch(x, self.augment)
        loss = regression_loss(self.loss_kind, self.model(x).float(), y)
        return loss, {"loss": loss.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def epoch_extras(self, val_metrics: dict[str, float]) -> dict[str, float]:
        return {}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "model_spec": rebuild_spec(self.model.spec),
            "feature_config": self.cfg.features.to_dict(),
            "train_config": self.cfg.to_dict(),
        }


GanSampler = Callable[[np.ndarray, int], np.ndarray]  # (labels (k, 2), seed) -> windows (k, 1, n_mels, n_frames)


def teacher_train_data(
    data: RunData, cfg: TrainConfig, gan_sampler: GanSampler | None = None
) -> Callable[[int], Dataset]:
    """Per-epoch training set: a fresh draw of real windows, plus GAN windows at ``cfg.gan_ratio``."""
    train = data.windows("train")

    def make(epoch: int) -> Dataset:
        idx = epoch_window_indices(train, cfg.train_windows_per_song, cfg.seed, epoch)
        real: Dataset = TorchWindows(train, idx)
        n_fake = round(cfg.gan_ratio * len(idx)) if gan_sampler is not None else 0
        if n_fake == 0:
            return real
        rng = np.random.default_rng([cfg.seed, epoch, 7])
        labels = train.targets[rng.choice(len(train), n_fake)]  # conditioning follows the real label distribution
        fake = ArrayWindows(gan_sampler(labels, int(rng.integers(2**31))), labels)
        return ConcatDataset([real, fake])

    return make


def fit_config(cfg: TrainConfig, stage: str, progress: bool = True) -> FitConfig:
    if stage == "teacher":
        return FitConfig(
            epochs=cfg.teacher_epochs,
            batch_size=cfg.batch_size,
            accum_steps=cfg.accum_steps,
            patience=cfg.patience,
            seed=cfg.seed,
            device=cfg.device,
            progress=progress,
        )
    return FitConfig(
        epochs=cfg.student_epochs,
        batch_size=cfg.student_batch_size,
        accum_steps=cfg.student_accum_steps,
        patience=cfg.patience,
        seed=cfg.seed,
        device=cfg.device,
        progress=progress,
        ema_decay=cfg.student_ema,
    )


def train_teacher(
    data: RunData,
    cfg: TrainConfig,
    out_dir: Path,
    gan_sampler: GanSampler | None = None,
    progress: bool = True,
) -> FitResult:
    """Train (or resume) the teacher into ``out_dir`` (``best.pt``, ``last.pt``, ``metrics.jsonl``, ``curves.png``)."""
    torch.manual_seed(cfg.seed)
    model = build_teacher(cfg)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.teacher_lr, cfg.teacher_backbone_lr_mult, cfg.weight_decay), lr=cfg.teacher_lr
    )
    stage = TeacherStage(model, cfg.teacher_loss, cfg)
    return fit(
        stage,
        optimizer,
        teacher_train_data(data, cfg, gan_sampler),
        data.windows("val"),
        out_dir,
        fit_config(cfg, "teacher", progress),
    )
