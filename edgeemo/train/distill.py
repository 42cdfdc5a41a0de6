"""MobileViT student distillation from the trained teacher.

Owns the student stage: loss = alpha * task loss (vs ground truth) + beta * output
distillation (vs the teacher's predictions) + gamma * feature distillation (the
student's pooled features, projected by a learned linear layer, vs the teacher's
pooled/CLS features; 1 - cosine similarity, so the term is scale-free). The teacher
runs once in eval mode over every training and validation window and its outputs
and features are cached (it is deterministic in eval mode, so the cache is exact);
each batch then carries labels and teacher targets side by side. Training itself
is the shared :func:`edgeemo.train.loop.fit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgeemo.config import StageContext, StudentConfig, to_plain
from edgeemo.data.windows import WindowSet
from edgeemo.evaluation import window_and_song_report
from edgeemo.log import log
from edgeemo.metrics import retention
from edgeemo.train.datasets import TorchWindows
from edgeemo.train.loop import (
    FitResult,
    ValenceArousalStage,
    fit,
    predict_windows,
    resolve_device,
    stage_fit_config,
)
from edgeemo.train.models import (
    Regressor,
    build_model,
    check_student_features,
    load_backbone,
    load_model,
    param_groups,
    rebuild_spec,
    student_spec,
)
from edgeemo.train.rundata import RunData, epoch_window_indices


@torch.no_grad()
def teacher_outputs(teacher: Regressor, windows: WindowSet, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """``(N, 2 + width)``: the teacher's predictions and pooled features for every window."""
    teacher.eval()
    rows = []
    for s in range(0, len(windows), batch_size):
        x = torch.from_numpy(windows.batch(range(s, min(s + batch_size, len(windows))))).to(device)
        out, feats = teacher.forward_with_features(x)
        rows.append(torch.cat([out.float(), feats.float()], dim=1).cpu().numpy())
    return np.concatenate(rows)


class DistillStage(ValenceArousalStage):
    """Student training against labels, teacher outputs and teacher features.

    Each batch target is ``[label (2) | teacher output (2) | teacher features (width)]``.
    """

    name = "student"

    def __init__(
        self,
        student: Regressor,
        teacher_width: int,
        cfg: StudentConfig,
        ctx: StageContext,
        teacher_val_ccc: float,
        started_from: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.started_from = started_from
        self.student = student
        self.proj = nn.Linear(student.width, teacher_width)
        self.model = nn.ModuleDict({"student": student, "proj": self.proj})
        self.alpha, self.beta, self.gamma = cfg.task_weight, cfg.output_weight, cfg.feature_weight
        self.teacher_val_ccc = teacher_val_ccc

    def loss_terms(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        y, t_out, t_feat = target[:, :2], target[:, 2:4], target[:, 4:]
        out, feats = self.student.forward_with_features(x)
        out = out.float()
        return {
            "task": nn.functional.mse_loss(out, y),
            "kd": nn.functional.mse_loss(out, t_out),
            "feat": 1.0 - nn.functional.cosine_similarity(self.proj(feats.float()), t_feat, dim=1).mean(),
        }

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms = self.loss_terms(x, target)
        total = self.alpha * terms["task"] + self.beta * terms["kd"] + self.gamma * terms["feat"]
        return total, {"loss": total.item(), **{k: v.item() for k, v in terms.items()}}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def epoch_extras(self, val_metrics: dict[str, float]) -> dict[str, float]:
        if self.teacher_val_ccc <= 0:  # retention is undefined against a teacher no better than chance
            return {"retention": float("nan")}
        return {"retention": retention(val_metrics["ccc_mean"], self.teacher_val_ccc)}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "model_spec": rebuild_spec(self.student.spec),
            "feature_config": self.ctx.features.to_dict(),
            "stage_config": {"student": to_plain(self.cfg), "context": to_plain(self.ctx)},
            "started_from": None if self.started_from is None else str(self.started_from),
            "teacher_val_ccc_mean": self.teacher_val_ccc,
            "loss_weights": {"task": self.alpha, "output": self.beta, "feature": self.gamma},
        }


def student_train_data(train: WindowSet, cached: np.ndarray, ctx: StageContext) -> Callable[[int], Dataset]:
    targets = np.concatenate([train.targets, cached], axis=1)

    def make(epoch: int) -> Dataset:
        return TorchWindows(train, epoch_window_indices(train, ctx.windows_per_song, ctx.seed, epoch), targets)

    return make


def train_student(
    data: RunData,
    cfg: StudentConfig,
    ctx: StageContext,
    teacher_checkpoint: Path,
    out_dir: Path,
    *,
    backbone: Path | None = None,
    progress: bool = True,
) -> FitResult:
    """Distil the teacher at ``teacher_checkpoint`` into a MobileViT student (resumable).

    ``backbone``: the pretrain stage's student weights to start from.
    """
    device = resolve_device(ctx.device)
    teacher, _ = load_model(teacher_checkpoint, device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    train, val = data.windows("train"), data.windows("val")
    t0 = time.perf_counter()
    cached = teacher_outputs(teacher, train, device)
    teacher_val = window_and_song_report(val, predict_windows(teacher, val, device))
    log(
        f"[student] cached teacher outputs for {len(train)} windows in {time.perf_counter() - t0:.1f} s; "
        f"teacher val CCC {teacher_val['ccc_mean']:.3f}"
    )
    check_student_features(cfg.arch, ctx.features)
    torch.manual_seed(ctx.seed)
    student = build_model(student_spec(cfg.arch, ctx.features.shape))
    if backbone is not None:
        load_backbone(student, Path(backbone))
    stage = DistillStage(student, teacher.width, cfg, ctx, teacher_val["ccc_mean"], started_from=backbone)
    groups = param_groups(student, cfg.lr, cfg.backbone_lr_mult, cfg.weight_decay)
    groups.append({"name": "proj", "params": list(stage.proj.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    fit_cfg = stage_fit_config(cfg, ctx, progress, ema_decay=cfg.ema)
    return fit(stage, optimizer, student_train_data(train, cached, ctx), val, out_dir, fit_cfg)
