"""Static int8 quantisation of the student with onnxruntime, calibrated on real mel windows.

Owns the quantisation recipe: ``quant_pre_process`` (shape inference + graph
optimisation) first, then ``quantize_static`` with per-channel weights and a
:class:`CalibrationDataReader` over training-split windows. The format (QDQ,
QOperator, or ``weights``: int8 weights dequantized at run time, float activations),
activation/weight types, calibration method and ops kept in float are
parameters, so :func:`compare_variants` can measure them on the real model and the
export ships the most accurate of the fastest that pass the accuracy gate. Dynamic quantisation is
deliberately absent: on MobileViT it makes ConvInteger nodes 3-5x slower than fp32.

Weights are quantised to 7 bits (``reduce_range``) by default: x86 CPUs without VNNI
(AVX2/AVX-512F only, e.g. the AMD EPYC CI machines) compute u8 x s8 dot products with
``vpmaddubsw``, whose int16 pair sums saturate with full 8-bit weights. Measured on such
a CPU with a linear test model: full-range weights gave errors up to 0.46 (on a [-1, 1]
output), 7-bit weights 0.007. The gate runs on the export machine, which may have VNNI
and never show the saturation, so the bundle must be safe on every CPU it may meet.

The regression head (the last pooling op to the output, :func:`head_nodes`) stays in
float (``float_head``): quantised, the output is an 8-bit grid (steps of 2/255 whose
zero-point rounding reaches -1.0039, outside the documented range) and tiny input
changes jump whole steps. With activations quantised, each window's int8 error (measured
p50 0.016, p99 0.16 on real audio for the MobileViT student; activation SQNR 17-23 dB
after the first stage) is re-drawn by any input change, so int16-vs-float input or a
different chunking move the output by about that much. The ``weights`` format stores the
same int8 weights but computes in float: no activation noise, so the model stays as
smooth as fp32 at a fp32-like speed. docs/hardening.md has the measurements.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeemo.bundle import INPUT_NAME, OUTPUT_NAME, WEIGHTS_ONLY_FORMAT
from edgeemo.exporting.onnx import ExportError, onnx_session

WEIGHT_OPS = ("Conv", "MatMul", "Gemm")  # the op types whose weights the weight-only format stores as int8


@dataclass(frozen=True)
class QuantRecipe:
    """One static-quantisation variant."""

    fmt: str = "qoperator"  # qdq | qoperator | weights (int8 weights, float activations)
    activation: str = "uint8"  # uint8 | int8
    weight: str = "int8"  # int8 | uint8
    per_channel: bool = True
    calibration: str = "minmax"  # minmax | entropy | percentile
    float_ops: tuple[str, ...] = ()  # op types left in float (e.g. LayerNormalization, Softmax)
    reduce_range: bool = True  # 7-bit weights: no u8s8 saturation on x86 CPUs without VNNI
    float_head: bool = True  # run the pooling + output layer (and its clamp) in float: see the module docstring
    float_input: bool = False  # keep the layer reading the log-mel input (the stem conv) in float
    float_depthwise: bool = False  # keep depthwise convs (few weights per channel, rounding-sensitive) in float

    @property
    def label(self) -> str:
        head = "".join(
            f" float-{part}"
            for part, on in (
                ("input", self.float_input),
                ("depthwise", self.float_depthwise),
                ("head", self.float_head),
            )
            if on
        )
        if self.fmt == WEIGHTS_ONLY_FORMAT:
            pc = "per-channel" if self.per_channel else "per-tensor"
            return f"WEIGHTS S8 {pc} float activations{head}"
        act = "U8" if self.activation == "uint8" else "S8"
        wt = "S8" if self.weight == "int8" else "U8"
        keep = f" float:{'+'.join(self.float_ops)}" if self.float_ops else ""
        pc = "per-channel" if self.per_channel else "per-tensor"
        bits = "" if self.reduce_range else " 8-bit-w"
        return f"{self.fmt.upper()} {act}{wt}{bits} {pc} {self.calibration}{keep}{head}"

    def to_dict(self) -> dict:
        return {**asdict(self), "float_ops": list(self.float_ops), "label": self.label}


DEFAULT_RECIPE = QuantRecipe()

CANDIDATES: tuple[QuantRecipe, ...] = (
    # float math: full 8-bit weights are safe (no u8s8 saturation); the float stem and depthwise convs cost no speed
    QuantRecipe(WEIGHTS_ONLY_FORMAT, reduce_range=False, float_input=True, float_depthwise=True),
    QuantRecipe("qoperator", "uint8", "int8", True, "minmax"),
    QuantRecipe("qdq", "uint8", "int8", True, "minmax"),
    QuantRecipe("qdq", "int8", "int8", True, "minmax"),
    QuantRecipe("qoperator", "uint8", "int8", True, "percentile"),
    QuantRecipe("qoperator", "uint8", "int8", True, "minmax", ("Softmax", "LayerNormalization")),
)


class WindowCalibrationReader:
    """``CalibrationDataReader`` over real ``(N, 1, n_mels, n_frames)`` windows, in small batches."""

    def __init__(self, windows: np.ndarray, batch_size: int = 8) -> None:
        self.windows = np.ascontiguousarray(windows, dtype=np.float32)
        self.batch_size = batch_size
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.windows):
            return None
        batch = self.windows[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._pos = 0


def unshare_initializers(path: Path) -> None:
    """Give every node its own copy of an initializer it shares with other nodes (in place).

    torch's constant folding can merge equal tensors (e.g. a zero Conv bias and a zero
    LayerNorm bias) into one initializer; onnxruntime's QOperator quantiser then
    rewrites it as a uint8 tensor that the Conv also reads, producing an invalid graph.
    """
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    seen: dict[str, int] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{node.name or 'n'}_{seen[name]}"
                model.graph.initializer.append(copy)
                node.input[k] = copy.name
    for i, node in enumerate(model.graph.node):  # nodes_to_exclude matches by name; hand-built graphs have none
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    onnx.save(model, str(path))


POOL_OPS = ("GlobalAveragePool", "ReduceMean", "AveragePool")
LINEAR_OPS = ("Gemm", "MatMul")
MAX_HEAD_NODES = 8


def input_nodes(model) -> list[str]:
    """Names of the nodes that read the model input directly (the stem conv of the student).

    Its weights multiply log-mel values that sit far from zero (the -80 dB floor is -2.5),
    so their rounding error becomes an offset on every output: measured on the MobileViT
    student with int8 weights and float activations, quantising the stem's 144 weights
    too tripled the error against fp32 (per window p99 0.040 -> 0.113, per song 0.025 -> 0.080).
    """
    return [n.name for n in model.graph.node if INPUT_NAME in n.input]


def depthwise_nodes(model) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes: 9 weights per channel after batch-norm folding,
    whose int8 rounding measured as the second-largest weight error of the student after the stem's
    (per song 0.025 -> 0.018 when kept in float, at 1.39 MB either way)."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]


def head_nodes(model) -> list[str]:
    """Names of the nodes from the last pooling op to the graph output (the regression head).

    Walks back from the single output along each node's first non-constant input and
    stops at a pooling op (:data:`POOL_OPS`, included). Without one within
    :data:`MAX_HEAD_NODES` nodes, the head is everything from the last linear op
    (:data:`LINEAR_OPS`) on; without that either, nothing.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {i.name for i in model.graph.initializer}
    chain: list = []
    name = model.graph.output[0].name
    while name in producers and len(chain) < MAX_HEAD_NODES:
        node = producers[name]
        chain.append(node)
        if node.op_type in POOL_OPS:
            return [n.name for n in chain]
        data = [i for i in node.input if i and i not in constants and i in producers]
        if not data:
            break
        name = data[0]
    linear = [k for k, n in enumerate(chain) if n.op_type in LINEAR_OPS]
    return [n.name for n in chain[: linear[-1] + 1]] if linear else []


def quantize_int8(
    fp32_path: Path, out_path: Path, calibration: np.ndarray, recipe: QuantRecipe = DEFAULT_RECIPE
) -> Path:
    """Write a statically quantised copy of ``fp32_path`` to ``out_path``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantType,
    )

    if len(calibration) == 0:
        raise ExportError("int8 calibration needs at least one real window")
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    reader_impl = WindowCalibrationReader(calibration)

    class _Reader(CalibrationDataReader):
        def get_next(self):
            return reader_impl.get_next()

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()  # the quantiser logs hundreds of harmless shape warnings on the root logger
    old_level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _quantize(fp32_path, out_path, _Reader(), recipe, types, methods)
    finally:
        root.setLevel(old_level)


def _quantize(fp32_path: Path, out_path: Path, reader, recipe: QuantRecipe, types: dict, methods: dict) -> Path:
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        unshare_initializers(pre)
        import onnx

        graph = onnx.load(str(pre))
        op_types = None
        if recipe.float_ops:
            present = {n.op_type for n in graph.graph.node}
            op_types = sorted(present - set(recipe.float_ops))
        exclude = (
            (head_nodes(graph) if recipe.float_head else [])
            + (input_nodes(graph) if recipe.float_input else [])
            + (depthwise_nodes(graph) if recipe.float_depthwise else [])
        )
        weights_only = recipe.fmt == WEIGHTS_ONLY_FORMAT
        if weights_only:
            op_types = list(WEIGHT_OPS)
        quantize_static(
            str(pre),
            str(out_path),
            reader,
            quant_format=QuantFormat.QOperator if recipe.fmt == "qoperator" else QuantFormat.QDQ,
            activation_type=types[recipe.activation],
            weight_type=types[recipe.weight],
            per_channel=recipe.per_channel,
            calibrate_method=methods[recipe.calibration],
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude or None,
            reduce_range=recipe.reduce_range,
            extra_options={"ActivationSymmetric": recipe.activation == "int8"},
        )
    if weights_only:
        strip_activation_qdq(out_path)
    return out_path


def strip_activation_qdq(path: Path) -> None:
    """Remove every QuantizeLinear -> DequantizeLinear pair on an activation from a QDQ model (in place).

    What is left dequantizes the int8 weight (and int32 bias) initializers and computes in
    float: the file keeps int8 weights, the outputs are a smooth function of the input.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    nodes = list(graph.node)
    quantize = {  # activation QuantizeLinear nodes by output: (index, float input)
        n.output[0]: (i, n.input[0])
        for i, n in enumerate(nodes)
        if n.op_type == "QuantizeLinear" and n.input[0] not in constants
    }
    drop = {i for i, _ in quantize.values()}
    source: dict[str, str] = {}  # a removed DequantizeLinear's output -> the float tensor it stood for
    for i, node in enumerate(nodes):
        if node.op_type == "DequantizeLinear" and node.input[0] in quantize:
            source[node.output[0]] = quantize[node.input[0]][1]
            drop.add(i)
    kept = [onnx.NodeProto() for i in range(len(nodes)) if i not in drop]
    for copy, node in zip(kept, (n for i, n in enumerate(nodes) if i not in drop), strict=True):
        copy.CopyFrom(node)
    for node in kept:
        for k, name in enumerate(node.input):
            node.input[k] = source.get(name, name)
    for out in graph.output:  # an output that a removed node produced keeps its name through an Identity
        if out.name in source:
            kept.append(onnx.helper.make_node("Identity", [source[out.name]], [out.name], name=f"{out.name}_identity"))
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(model, str(path))


def median_latency_ms(
    model_path: Path, shape: tuple[int, int], runs: int = 50, threads: int = 1
) -> tuple[float, float]:
    """Median and p95 single-window latency (ms) after warm-up."""
    sess = onnx_session(model_path, threads)
    x = np.random.default_rng(0).standard_normal((1, 1, *shape)).astype(np.float32)
    for _ in range(5):
        sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run([OUTPUT_NAME], {INPUT_NAME: x})
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 95))


def requantize_bundle(
    bundle_dir: Path, calibration: np.ndarray, out_dir: Path, recipe: QuantRecipe = DEFAULT_RECIPE
) -> Path:
    """Write a copy of the bundle at ``bundle_dir`` to ``out_dir`` whose int8 model is re-quantised
    from its fp32 ``model.onnx`` with ``recipe``, calibrated on ``calibration`` windows.

    The card keeps everything but ``quantization`` (the new recipe, the calibration
    count and the recipe it replaced) and ``default_model`` (the int8 model); figures the
    export measured on the old int8 model stay as they were, so re-export for new ones.
    """
    from edgeemo.bundle import FP32_NAME, INT8_NAME, verify_bundle, write_bundle

    bundle = verify_bundle(bundle_dir)
    card = {k: v for k, v in bundle.card.items() if k != "files"}
    old = card.get("quantization") if isinstance(card.get("quantization"), dict) else {}
    old_recipe = old.get("recipe") if isinstance(old.get("recipe"), dict) else {}
    card["quantization"] = {
        "recipe": recipe.to_dict(),
        "calibration_windows": len(calibration),
        "requantized_from": old_recipe.get("label"),
    }
    card["default_model"] = INT8_NAME
    with tempfile.TemporaryDirectory() as tmp:
        int8 = quantize_int8(bundle.path / FP32_NAME, Path(tmp) / INT8_NAME, calibration, recipe)
        write_bundle(out_dir, {FP32_NAME: bundle.path / FP32_NAME, INT8_NAME: int8}, card)
    verify_bundle(out_dir)  # the new int8 model loads and passes the output probe
    return Path(out_dir)
