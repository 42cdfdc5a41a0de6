"""A convolutional stem for the ViT teacher, in place of its one-layer patch embedding.

Owns :class:`ConvStem` and :func:`install_conv_stem`. Xiao et al. (2021, "Early
convolutions help transformers see better") replace the ViT's stride-p patchify
convolution by a few stride-2 3x3 convolutions ending on the same token grid; ViTs
trained from scratch on little data then optimise faster and generalise better. Here
the stem halves the mel and frame axes (each only while its patch side still allows)
until one position covers one ``(mel bins, frames)`` patch, doubling channels from 24,
then a 1x1 convolution projects to the ViT width. The token grid, position embeddings
and everything after the patch embedding are timm's own.
"""

from __future__ import annotations

from torch import nn

from edgeemo.errors import TrainingError

_FIRST_CHANNELS = 24
_MAX_CHANNELS = 192


def _halvings(side: int) -> int:
    """How many stride-2 steps make ``side`` (a power of two) shrink to 1."""
    if side < 1 or side & (side - 1):
        raise TrainingError(f"a conv stem needs power-of-two patch sides, got {side}")
    return side.bit_length() - 1


class ConvStem(nn.Module):
    """(B, in_chans, H, W) -> (B, embed_dim, H / patch[0], W / patch[1]) by stride-2 3x3 convs + BN + ReLU."""

    def __init__(self, in_chans: int, embed_dim: int, patch: tuple[int, int], from_weights: bool = False) -> None:
        super().__init__()
        self.from_weights = from_weights  # loaded from a weights file (vs fresh): partial fine-tuning freezes it
        rows, cols = _halvings(patch[0]), _halvings(patch[1])
        layers: list[nn.Module] = []
        channels = in_chans
        out = _FIRST_CHANNELS
        for i in range(max(rows, cols)):
            stride = (2 if i < rows else 1, 2 if i < cols else 1)
            layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels, out = out, min(out * 2, _MAX_CHANNELS)
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def install_conv_stem(vit: nn.Module, in_chans: int = 1, from_weights: bool = False) -> None:
    """Swap a timm ViT's patch-embedding projection for a :class:`ConvStem` with the same token grid.

    ``from_weights``: the stem's weights are about to be loaded from a file (so freezing may keep it).
    """
    embed = getattr(vit, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise TrainingError(f"{type(vit).__name__} has no convolutional patch embedding to replace with a conv stem")
    embed.proj = ConvStem(in_chans, proj.out_channels, tuple(int(v) for v in embed.patch_size), from_weights)
