"""Training presets (``tiny``, ``small``, ``base``) and the flat :class:`TrainConfig` they fill.

Named in this one place. A preset is a set of field overrides on the defaults; every
CLI flag overrides one field. The resolved config is written to
``runs/<name>/config.json`` and read back on resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeemo.errors import EdgeemoError
from edgeemo.features import FeatureConfig


@dataclass
class TrainConfig:
    preset: str = "tiny"
    seed: int = 0
    device: str = "auto"
    # data
    corpus_n: int = 400
    corpus_seed: int = 0
    corpus_duration: float = 12.0
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    train_windows_per_song: int | None = 8  # evenly spaced windows per training song each epoch (None: all)
    quadrant_magnitude: float = 1.0  # quadrant songs (4Q) become targets (+-m, +-m); 1.0 measured best (README)
    quadrant_confidence: bool = False  # scale m by the song's pquad confidence
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # pretraining on unlabeled audio by distilling MSD-musicnn embeddings (runs when ``unlabeled`` names folders)
    unlabeled: tuple[str, ...] = ()
    pretrain_epochs: int = 8
    pretrain_lr: float = 5e-4
    pretrain_batch_size: int = 32
    pretrain_hop_s: float = 3.0  # spacing of the windows taken from each unlabeled file
    pretrain_max_windows: int = 60  # per file (about 3 minutes at the default hop)
    pretrain_tag_weight: float = 0.5  # weight of the tag (BCE) term beside the embedding (MSE) term
    # emotion probe (train/probe.py): weight of its term (0: off) and the ridge of its fit
    pretrain_speed_copies: int = 0  # speed-changed copies (±0.5-3 semitones) of each training file, targets recomputed
    pretrain_probe_weight: float = 0.0
    pretrain_probe_ridge: float = 100.0
    pretrain_val_fraction: float = 0.1  # unlabeled files held out to measure how well the embeddings are learnt
    musicnn_weights: str | None = None  # converted MSD-musicnn weights (default: edgeemo pretrained import-musicnn's)
    # GAN augmentation
    gan_epochs: int = 15
    gan_lr: float = 2e-4
    gan_d_lr_mult: float = 0.5
    gan_d_every: int = 2
    gan_g_steps: int = 2
    gan_noise_std: float = 0.1
    gan_noise_min: float = 0.01
    gan_real_label: float = 0.9
    gan_fake_label: float = 0.1
    gan_batch_size: int = 32
    gan_latent_dim: int = 64
    gan_ratio: float = 0.25  # generated windows mixed into teacher training, as a fraction of real windows
    # teacher
    teacher_arch: str = "vit_tiny_patch16_224"
    teacher_depth: int | None = None
    teacher_pool: str = "token"  # token (class token) | avg (mean of the patch tokens)
    teacher_patch: tuple[int, int] | None = None  # ViT patch (mel bins, frames); None: the architecture's own
    teacher_stem: str = "patch"  # patch (timm's one convolution) | conv (stride-2 3x3 conv stem, train/stem.py)
    teacher_drop_path: float = 0.0  # stochastic depth of the ViT's last block (linear ramp over the blocks)
    teacher_pretrained: bool = False
    teacher_weights: str | None = None
    teacher_trainable_blocks: int = 4
    teacher_epochs: int = 12
    teacher_lr: float = 3e-5
    teacher_backbone_lr_mult: float = 0.1
    teacher_loss: str = "mse"  # mse | ccc | mix
    augment_shift: int = 0  # teacher batches: max mel-bin shift either way (a cheap transposition)
    augment_freq_mask: int = 0  # teacher batches: max SpecAugment frequency-mask width (mel bins)
    augment_time_mask: int = 0  # teacher batches: max SpecAugment time-mask width (frames)
    weight_decay: float = 0.05
    batch_size: int = 12
    accum_steps: int = 4
    patience: int | None = 6
    # student
    student_arch: str = "mobilevit_xxs"
    student_epochs: int = 12
    student_lr: float = 2e-3
    student_ema: float = 0.0  # > 0: the student kept and exported is an EMA of its weights with this decay
    student_batch_size: int = 32
    student_accum_steps: int = 1
    student_pretrain: bool = False  # with ``unlabeled``: the student also learns the musicnn targets before distilling
    student_weights: str | None = None  # a backbone state dict the student starts from (set by the pipeline)
    alpha: float = 0.5  # ground-truth task loss
    beta: float = 0.5  # teacher-output distillation
    gamma: float = 0.1  # feature distillation

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = self.features.to_dict()
        d["split_fractions"] = list(self.split_fractions)
        d["unlabeled"] = list(self.unlabeled)
        d["teacher_patch"] = None if self.teacher_patch is None else list(self.teacher_patch)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgeemoError(f"unknown training config field(s): {', '.join(unknown)}")
        if "features" in data and isinstance(data["features"], dict):
            data["features"] = FeatureConfig.from_dict(data["features"])
        if "split_fractions" in data:
            data["split_fractions"] = tuple(data["split_fractions"])
        if data.get("teacher_patch") is not None:
            data["teacher_patch"] = tuple(int(v) for v in data["teacher_patch"])
        if isinstance(data.get("unlabeled"), (str, Path)):
            data["unlabeled"] = (str(data["unlabeled"]),)
        if "unlabeled" in data:
            data["unlabeled"] = tuple(str(d) for d in data["unlabeled"])
        return cls(**data)


_TINY_FEATURES = FeatureConfig()  # 16 kHz, 64 mels x 128 frames (hop 500) = 4.06 s, 2 Hz windows
_BASE_FEATURES = FeatureConfig(n_mels=128, hop_length=250, n_frames=256)  # 128 x 256, 4.03 s

PRESETS: dict[str, dict[str, Any]] = {
    # CPU, CI, minutes: ViT-Tiny (from scratch: all blocks train) -> MobileViT-XXS
    "tiny": dict(
        features=_TINY_FEATURES,
        teacher_arch="vit_tiny_patch16_224",
        teacher_patch=(8, 32),  # 8 mel bins x 1 s: same 32 tokens and cost as 16 x 16, finer pitch (README)
        teacher_stem="conv",  # stride-2 3x3 conv stem: learns valence ~2x faster from scratch (README)
        corpus_n=800,  # 800 built-in songs at 4 windows each per epoch: same cost as 400 x 8, more variety (README)
        train_windows_per_song=4,
        teacher_lr=1e-3,
        teacher_backbone_lr_mult=0.1,
        teacher_epochs=12,
        gan_epochs=15,
        student_arch="mobilevit_xxs",
        student_epochs=12,
    ),
    # CPU, about an hour: ViT-Small -> MobileViT-XXS at 128 x 256
    "small": dict(
        features=_BASE_FEATURES,
        teacher_arch="vit_small_patch16_224",
        teacher_lr=5e-4,
        teacher_epochs=20,
        student_arch="mobilevit_xxs",
        student_epochs=20,
        train_windows_per_song=6,
    ),
    # the paper recipe, GPU: ViT-B/16 (pretrained when asked) -> MobileViT-S at 128 x 256
    "base": dict(
        features=_BASE_FEATURES,
        teacher_arch="vit_base_patch16_224",
        teacher_lr=3e-5,
        teacher_epochs=30,
        student_arch="mobilevit_s",
        student_epochs=30,
        train_windows_per_song=None,
    ),
}


def make_config(preset: str = "tiny", **overrides: Any) -> TrainConfig:
    """The preset's config with ``overrides`` (``None`` values are ignored) applied."""
    if preset not in PRESETS:
        raise EdgeemoError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    values["preset"] = preset
    return TrainConfig.from_dict(values)


def with_values(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``cfg`` with ``values`` applied as given (what ``--set FIELD=VALUE`` does; ``None`` resets an optional field)."""
    if not values:
        return cfg
    return TrainConfig.from_dict({**cfg.to_dict(), **values})
