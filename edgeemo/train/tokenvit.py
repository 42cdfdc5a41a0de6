"""The hybrid ViT backbone over MSD-musicnn's pretrained front end (timm's hybrid-ViT pattern).

Owns :class:`TokenViT`: musicnn's front end and midend embed the patches -- their 1506-d token
frames (:mod:`edgeemo.train.views`) are standardised with stored statistics, projected to the ViT
width and read by a class token through timm ViT blocks -- and :func:`token_vit_spec`, the model
spec :func:`edgeemo.train.models.build_model` builds it from.

With ``probe`` the backbone also carries a frozen linear probe of the window's pooled tokens (the
mean of the channel means, the max of the channel maxima, standardised: the features of the musicnn
+ linear peer, for one window), fitted in closed form before training (:meth:`TokenViT.set_probe`),
and its two outputs follow the class-token features; :class:`edgeemo.train.models.ProbeHead` adds the 3-layer head's
output, which starts at zero, to the probe's: the ViT learns a correction of the probe, and
selection on validation songs keeps the correction only where it helps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edgeemo.train.views import N_TOKENS, TOKEN_DIM

TOKEN_VIT = "musicnn_token_vit"


class TokenViT(nn.Module):
    """ViT blocks over musicnn token frames ``(B, N_TOKENS, 1506)`` -> class-token features ``(B, dim)``."""

    def __init__(
        self,
        dim: int = 192,
        depth: int = 8,
        heads: int = 3,
        n_tokens: int = N_TOKENS,
        token_dim: int = TOKEN_DIM,
        drop_path: float = 0.1,
        token_drop: float = 0.1,
        probe: bool = False,
    ) -> None:
        from timm.models.vision_transformer import Block

        super().__init__()
        self.has_probe = probe
        self.num_features = dim + (2 if probe else 0)
        self.register_buffer("token_mean", torch.zeros(token_dim))
        self.register_buffer("token_std", torch.ones(token_dim))
        self.proj = nn.Linear(token_dim, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens + 1, dim) * 0.02)
        self.token_drop = nn.Dropout(token_drop)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.Sequential(*(Block(dim, heads, qkv_bias=True, drop_path=r) for r in rates))
        self.norm = nn.LayerNorm(dim)
        if probe:
            self.register_buffer("pooled_mean", torch.zeros(token_dim))
            self.register_buffer("pooled_std", torch.ones(token_dim))
            self.probe = nn.Linear(token_dim, 2)
            nn.init.zeros_(self.probe.weight)
            nn.init.zeros_(self.probe.bias)
            self.probe.requires_grad_(False)

    def set_probe(self, mean: np.ndarray, std: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> None:
        """The probe: pooled-feature statistics and the linear map ``(2, 1506)``, ``(2,)`` on standardised features."""
        self.pooled_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.pooled_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))
        self.probe.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        self.probe.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def set_token_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.token_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.token_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj((tokens - self.token_mean) / self.token_std)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.blocks(self.token_drop(x))
        feats = self.norm(x)[:, 0]
        if not self.has_probe:
            return feats
        return torch.cat([feats, self.probe((pooled_tokens(tokens) - self.pooled_mean) / self.pooled_std)], dim=1)


def pooled_tokens(tokens: Any) -> Any:
    """A window's pooled token features ``(B, 1506)``: the mean of the channel means, the max of the channel
    maxima over its tokens (numpy or torch)."""
    half = tokens.shape[-1] // 2
    if isinstance(tokens, np.ndarray):
        return np.concatenate([tokens[:, :, :half].mean(axis=1), tokens[:, :, half:].max(axis=1)], axis=1)
    return torch.cat([tokens[:, :, :half].mean(dim=1), tokens[:, :, half:].amax(dim=1)], dim=1)


def token_vit_spec(
    dim: int = 192, depth: int = 8, heads: int = 3, drop_path: float = 0.1, probe: bool = False
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dim": dim, "depth": depth, "heads": heads, "drop_path": drop_path}
    if probe:
        kwargs["probe"] = True
    return {
        "role": "teacher",
        "arch": TOKEN_VIT,
        "input": "musicnn_tokens",
        "input_shape": [N_TOKENS, TOKEN_DIM],
        "kwargs": kwargs,
    }
