"""A hybrid ViT teacher over MSD-musicnn's pretrained front end, and its student distilled on shared views.

The teacher is a :class:`~edgeemo.train.tokenvit.TokenViT` (timm's hybrid-ViT pattern: musicnn's
pretrained front end and midend embed the patches) with the 3-layer regression head. Owns the
teacher stage over tokens (:func:`train_token_teacher`), the teacher's outputs on
every window of a :class:`~edgeemo.train.viewset.ViewSet` (:func:`token_teacher_outputs`) and the
student stage (:func:`train_view_student`): the MobileViT student learns, on the log-mel of the
very view the teacher heard, the teacher's outputs on every window -- labelled songs and unlabeled
audio alike -- plus the labels where there are labels. Both stages run the shared loop
(checkpoints every epoch, resume from ``last.pt``). Validation is on labelled songs, view 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from edgeemo import metrics
from edgeemo.errors import TrainingError
from edgeemo.features import FeatureConfig
from edgeemo.train.augment import mixup_batch
from edgeemo.train.loop import FitConfig, FitResult, ValenceArousalStage, fit, resolve_device
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
from edgeemo.train.rundata import epoch_group_indices
from edgeemo.train.tokenvit import pooled_tokens, token_vit_spec
from edgeemo.train.views import TOKEN_DIM
from edgeemo.train.viewset import MelWindows, TokenWindows, ViewSet


@dataclass(frozen=True)
class TokenTeacherSettings:
    dim: int = 192
    depth: int = 8
    heads: int = 3
    drop_path: float = 0.1
    epochs: int = 10
    lr: float = 3e-4
    weight_decay: float = 0.05
    batch_size: int = 64
    windows_per_entry: int = 12  # windows drawn per (song, view) each epoch
    patience: int | None = None
    probe_alpha: float | None = None  # > 0: a frozen ridge probe of the pooled tokens, the ViT learns its correction


@dataclass(frozen=True)
class ViewStudentSettings:
    arch: str = "mobilevit_xxs"
    epochs: int = 6
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 32
    windows_per_entry: int = 6
    task_weight: float = 0.5
    output_weight: float = 1.0
    feature_weight: float = 0.0  # > 0: also match the window's standardised pooled musicnn tokens (1 - cosine)
    patience: int | None = None
    select: str = "best"  # or "last": keep the final epoch of the fixed schedule
    mixup: float = 0.0  # > 0: blend training windows and their targets pairwise, lam ~ Beta(mixup, mixup)
    backbone_lr_mult: float = 1.0  # the backbone's learning rate as a multiple of lr (the head keeps lr)


def viewset_report(data: ViewSet, preds: np.ndarray) -> dict[str, float]:
    """Window CCC per dimension and their mean against the labels, plus item-level quadrant figures."""
    labels = data.window_labels()
    out = {
        "ccc_valence": metrics.ccc(labels[:, 0], preds[:, 0]),
        "ccc_arousal": metrics.ccc(labels[:, 1], preds[:, 1]),
    }
    out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2
    means = data.item_means(preds)
    seen = np.isfinite(means[:, 0])
    truth = metrics.quadrant_of(data.labels[seen, 0], data.labels[seen, 1])
    q = metrics.quadrant_report(truth, means[seen, 0], means[seen, 1])
    out.update({k: float(q[k]) for k in ("quadrant_macro_f1", "valence_auc", "arousal_auc") if k in q})
    return out


def _predict(fn, n: int, batch: Any, device: torch.device, batch_size: int = 256) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            x = torch.from_numpy(batch(range(i, min(n, i + batch_size)))).to(device)
            outs.append(fn(x).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 2), np.float32)


def _tokens_of(data: ViewSet, idx: Any) -> np.ndarray:
    return np.stack([data.tokens(i) for i in idx])


def _mels_of(data: ViewSet, idx: Any) -> np.ndarray:
    return np.stack([data.mel(i) for i in idx])[:, None]


class _ViewSetStage(ValenceArousalStage):
    """A stage validated on the labelled windows of a :class:`ViewSet` (view 0 of the validation songs)."""

    eval_batch = 256

    def inputs(self, data: ViewSet, idx: Any) -> np.ndarray:
        raise NotImplementedError

    def validate(self, val: ViewSet, device: torch.device, batch_size: int) -> dict[str, float]:
        preds = _predict(self.predict, len(val), lambda idx: self.inputs(val, idx), device, self.eval_batch)
        return viewset_report(val, preds)


class TokenTeacherStage(_ViewSetStage):
    name = "teacher"

    def __init__(self, model: Regressor, settings: TokenTeacherSettings) -> None:
        self.model = model
        self.settings = settings

    def inputs(self, data: ViewSet, idx: Any) -> np.ndarray:
        return _tokens_of(data, idx)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = nn.functional.mse_loss(self.model(x).float(), y)
        return loss, {"loss": loss.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"model_spec": self.model.spec, "stage_config": {"teacher": asdict(self.settings)}}


def token_stats(data: ViewSet, max_entries: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and sd of the token frames of (up to ``max_entries``) entries of ``data``."""
    step = max(1, len(data.views) // max_entries)
    frames = np.concatenate([np.asarray(v.tokens, np.float32) for v in data.views[::step]])
    return frames.mean(axis=0), frames.std(axis=0)


def train_token_teacher(
    train: ViewSet,
    val: ViewSet,
    out_dir: Path,
    settings: TokenTeacherSettings,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> tuple[Regressor, FitResult]:
    """Fit the token ViT on the labelled windows of ``train`` (all views); select on ``val``. Resumable."""
    torch.manual_seed(seed)
    probe = settings.probe_alpha is not None
    model = build_model(token_vit_spec(settings.dim, settings.depth, settings.heads, settings.drop_path, probe))
    model.backbone.set_token_stats(*token_stats(train))
    data = TokenWindows(train)
    if len(data) == 0:
        raise TrainingError("the token teacher has no labelled window to learn from")
    if probe and not (Path(out_dir) / "last.pt").is_file():  # a resumed run has its probe in last.pt
        model.backbone.set_probe(*fit_ridge_probe(data, float(settings.probe_alpha)))
    stage = TokenTeacherStage(model, settings)
    result = _fit_windows(stage, model, data, data.data.index[:, 0], val, out_dir, settings, seed, device, progress)
    model, _ = load_model(Path(out_dir) / "best.pt")
    return model, result


def fit_ridge_probe(data: TokenWindows, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form ridge from the standardised pooled tokens of every labelled window to its label: (feature
    mean, feature sd, weight (2, 1506), bias (2,))."""
    if alpha <= 0:
        raise TrainingError(f"the probe's ridge alpha must be > 0, got {alpha}")
    pooled = np.concatenate(
        [pooled_tokens(_tokens_of(data.data, range(i, min(len(data), i + 512)))) for i in range(0, len(data), 512)]
    ).astype(np.float64)
    mean, std = pooled.mean(axis=0), np.maximum(pooled.std(axis=0), 1e-3)
    x = (pooled - mean) / std
    y = np.asarray(data.labels, dtype=np.float64)
    y_mean = y.mean(axis=0)
    weight = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (y - y_mean))
    return mean, std, weight.T, y_mean


def pooled_token_stats(data: ViewSet, max_windows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and sd (floored at 1e-3) of the pooled tokens of (up to ``max_windows``, evenly
    spread) windows of ``data``."""
    rows = np.linspace(0, len(data) - 1, min(len(data), max_windows)).round().astype(np.int64)
    pooled = np.concatenate(
        [pooled_tokens(_tokens_of(data, rows[i : i + 512])) for i in range(0, rows.size, 512)]
    ).astype(np.float64)
    return pooled.mean(axis=0).astype(np.float32), np.maximum(pooled.std(axis=0), 1e-3).astype(np.float32)


def token_teacher_outputs(model: Regressor, data: ViewSet, device: str = "auto") -> np.ndarray:
    """``(len(data), 2)``: the teacher's outputs on every window of ``data``."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    return _predict(model, len(data), lambda idx: _tokens_of(data, idx), dev)


class ViewDistillStage(_ViewSetStage):
    name = "student"
    eval_batch = 64

    def __init__(
        self, student: Regressor, settings: ViewStudentSettings, features: FeatureConfig | None = None
    ) -> None:
        self.student = student
        modules: dict[str, nn.Module] = {"student": student}  # checkpoints as the student stage's: "student." keys
        if settings.feature_weight > 0:
            self.proj = nn.Linear(student.width, TOKEN_DIM)
            modules["proj"] = self.proj
        self.model = nn.ModuleDict(modules)
        self.settings = settings
        self.features = features

    def inputs(self, data: ViewSet, idx: Any) -> np.ndarray:
        return _mels_of(data, idx)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.student.training and self.settings.mixup > 0:
            x, target = mixup_batch(x, target, self.settings.mixup, mask_cols=slice(2, 3))
        y, has, t_out = target[:, :2], target[:, 2:3], target[:, 3:5]
        out, feats = self.student.forward_with_features(x)
        out = out.float()
        task = ((out - y) ** 2 * has).sum() / (2 * has.sum()).clamp(min=1.0)
        kd = nn.functional.mse_loss(out, t_out)
        total = self.settings.task_weight * task + self.settings.output_weight * kd
        terms = {"task": task.item(), "kd": kd.item()}
        if self.settings.feature_weight > 0:
            feat = 1.0 - nn.functional.cosine_similarity(self.proj(feats.float()), target[:, 5:], dim=1).mean()
            total = total + self.settings.feature_weight * feat
            terms["feat"] = feat.item()
        return total, {"loss": total.item(), **terms}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "model_spec": rebuild_spec(self.student.spec),
            "feature_config": None if self.features is None else self.features.to_dict(),
            "stage_config": {"student": asdict(self.settings)},
        }


def train_view_student(
    train: ViewSet,
    teacher_out: np.ndarray,
    val: ViewSet,
    out_dir: Path,
    settings: ViewStudentSettings,
    *,
    backbone: Path | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> tuple[Regressor, FitResult]:
    """Distil ``teacher_out`` (one row per window of ``train``) and the labels into the student. Resumable."""
    if len(teacher_out) != len(train):
        raise TrainingError(f"teacher outputs ({len(teacher_out)}) do not match the windows ({len(train)})")
    check_student_features(settings.arch, train.features)
    torch.manual_seed(seed)
    student = build_model(student_spec(settings.arch, train.features.shape))
    if backbone is not None:
        load_backbone(student, backbone)
    stats = pooled_token_stats(train) if settings.feature_weight > 0 else None
    data = MelWindows(train, teacher_out, stats)
    stage = ViewDistillStage(student, settings, train.features)
    result = _fit_windows(stage, student, data, train.index[:, 0], val, out_dir, settings, seed, device, progress)
    student, _ = load_model(Path(out_dir) / "best.pt")
    return student, result


def _fit_windows(
    stage: Any,
    model: Regressor,
    data: Dataset,
    entry_of: np.ndarray,
    val: ViewSet,
    out_dir: Path,
    settings: TokenTeacherSettings | ViewStudentSettings,
    seed: int,
    device: str,
    progress: bool,
) -> FitResult:
    """The shared loop over ``data``, ``settings.windows_per_entry`` windows of each (item, view) an epoch,
    AdamW on ``model`` (no decay on biases and norms)."""
    lr_mult = getattr(settings, "backbone_lr_mult", 1.0)
    optimizer = torch.optim.AdamW(param_groups(model, settings.lr, lr_mult, settings.weight_decay), lr=settings.lr)
    cfg = FitConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        accum_steps=1,
        patience=settings.patience,
        seed=seed,
        device=device,
        progress=progress,
        select=getattr(settings, "select", "best"),
    )
    return fit(
        stage,
        optimizer,
        lambda epoch: Subset(data, epoch_group_indices(entry_of, settings.windows_per_entry, seed, epoch)),
        val,
        out_dir,
        cfg,
    )
