"""The int8 recipe keeps the regression head in float: outputs stay in [-1, 1] and off the 8-bit output grid.

A small conv model built here (Conv -> Relu -> Conv -> Relu -> GlobalAveragePool ->
Flatten -> Gemm -> Clip) is quantised with the export recipe with and without
``float_head`` and compared with its fp32 graph on real-looking windows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

import onnx

from edgeemo.bundle import WEIGHTS_ONLY_FORMAT, open_session, quantization_format, verify_bundle, write_bundle
from edgeemo.exporting.quantize import (
    CANDIDATES,
    DEFAULT_RECIPE,
    QuantRecipe,
    head_nodes,
    input_nodes,
    quantize_int8,
    requantize_bundle,
)
from edgeemo.features import frame_windows, log_mel
from edgeemo.runtime import EmotionModel
from tests.runtime_fixtures import SMALL_CFG, mood_clip, sample_card

# The bounds these tests hold the float-head int8 model to (against its own fp32 graph):
MAX_INT8_ERROR = 0.05  # per window, |int8 - fp32|
MAX_NUDGE_CHANGE = 0.01  # per window, |int8(x) - int8(x + 1e-5 noise)|: no 2/255 output-grid jumps
MAX_WEIGHTS_ERROR = 0.02  # per window, |weight-only int8 - fp32|


def _conv_model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    cfg = SMALL_CFG
    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((8, 1, 3, 3)) * 0.4).astype(np.float32)
    w2 = (rng.standard_normal((8, 8, 3, 3)) * 0.15).astype(np.float32)
    wf = (rng.standard_normal((2, 8)) * 1.5).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["mel", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["lin"], transB=1, name="gemm"),
        helper.make_node("Clip", ["lin", "lo", "hi"], ["valence_arousal"], name="clip"),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.full(8, 0.6, np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b2"),
        numpy_helper.from_array(wf, "wf"),
        numpy_helper.from_array(np.array([-0.9, -1.2], np.float32), "bf"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
    ]
    graph = helper.make_graph(
        nodes,
        "small_conv",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", 1, cfg.n_mels, cfg.n_frames])],
        [helper.make_tensor_value_info("valence_arousal", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _windows(seeds: range, loud: float = 1.0) -> np.ndarray:
    cfg = SMALL_CFG
    clips = [mood_clip(6.0, cfg.sample_rate, seed=s) * loud for s in seeds]
    return np.concatenate([frame_windows(log_mel(c, cfg), cfg)[::2] for c in clips])[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("int8")
    fp32 = _conv_model(d / "fp32.onnx")
    calib = _windows(range(4))
    out = {"fp32": fp32}
    for name, head in (("float_head", True), ("int8_head", False)):
        recipe = replace(DEFAULT_RECIPE, float_head=head)
        out[name] = quantize_int8(fp32, d / f"{name}.onnx", calib, recipe)
    out["weights"] = quantize_int8(
        fp32, d / "weights.onnx", calib, QuantRecipe(WEIGHTS_ONLY_FORMAT, reduce_range=False)
    )
    return out


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return open_session(path).run(None, {"mel": x})[0]


def test_head_nodes_are_pool_to_output(models):
    assert head_nodes(onnx.load(str(models["fp32"]))) == ["clip", "gemm", "flatten", "pool"]
    graph = onnx.load(str(models["float_head"])).graph
    ops = [n.op_type for n in graph.node]
    assert "QLinearConv" in ops  # the body is quantised
    assert ops[-4:] == ["GlobalAveragePool", "Flatten", "Gemm", "Clip"]  # the head runs in float, clamp kept
    assert [n.op_type for n in onnx.load(str(models["int8_head"])).graph.node][-1] == "DequantizeLinear"


def test_float_head_outputs_stay_in_range_and_off_the_output_grid(models):
    x = np.concatenate([_windows(range(10, 16)), _windows(range(20, 23), loud=2.5)])
    fp = _run(models["fp32"], x)
    fh, ih = _run(models["float_head"], x), _run(models["int8_head"], x)
    assert np.any(np.abs(fp) == 1.0)  # some windows saturate the clamp
    assert fh.min() >= -1.0 and fh.max() <= 1.0
    assert np.abs(fh - fp).max() <= MAX_INT8_ERROR
    # the quantised head can only say multiples of its output scale; the float head is continuous
    for out, on_grid in ((ih, True), (fh, False)):
        gaps = np.diff(np.unique(out[:, 0]))
        ratio = gaps / gaps.min()
        assert np.allclose(ratio, np.round(ratio), atol=0.01) == on_grid


def test_tiny_input_changes_move_the_float_head_model_a_little(models):
    x = _windows(range(30, 36))
    nudged = x + np.random.default_rng(0).normal(0, 1e-5, x.shape).astype(np.float32)
    fh = np.abs(_run(models["float_head"], x) - _run(models["float_head"], nudged)).max()
    fp = np.abs(_run(models["fp32"], x) - _run(models["fp32"], nudged)).max()
    assert fp < 1e-4 and fh <= MAX_NUDGE_CHANGE


def test_weight_only_format_keeps_int8_weights_and_float_math(models):
    import onnx

    graph = onnx.load(str(models["weights"])).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" not in ops and ops.count("DequantizeLinear") >= 2  # only the weights are dequantized
    constants = {i.name for i in graph.initializer}
    assert {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"} <= constants  # no activation DQ
    int8 = sorted(i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4)
    assert int8 == ["w1_quantized", "w2_quantized"]  # the two conv weights; the head stays float
    x = _windows(range(30, 36))
    nudged = x + np.random.default_rng(0).normal(0, 1e-5, x.shape).astype(np.float32)
    fp, w = _run(models["fp32"], x), _run(models["weights"], x)
    assert np.abs(w - fp).max() <= MAX_WEIGHTS_ERROR and w.min() >= -1.0 and w.max() <= 1.0
    moved_w = np.abs(_run(models["weights"], nudged) - w).max()
    moved_fp = np.abs(_run(models["fp32"], nudged) - fp).max()
    assert moved_w <= 2 * moved_fp + 1e-6  # as smooth as fp32: no quantisation step to cross


def test_weights_candidate_keeps_the_input_layer_in_float(models, tmp_path):
    weights = [r for r in CANDIDATES if r.fmt == WEIGHTS_ONLY_FORMAT]
    assert len(weights) == 1 and weights[0].float_input and weights[0].float_depthwise and not weights[0].reduce_range
    assert input_nodes(onnx.load(str(models["fp32"]))) == ["conv1"]
    path = quantize_int8(models["fp32"], tmp_path / "w.onnx", _windows(range(4)), weights[0])
    graph = onnx.load(str(path)).graph
    assert sorted(i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4) == [
        "w2_quantized"
    ]
    x = _windows(range(50, 53))
    assert np.abs(_run(path, x) - _run(models["fp32"], x)).max() <= MAX_WEIGHTS_ERROR


def test_weights_bundle_loads_with_folded_weights(models, tmp_path, monkeypatch):
    import edgeemo.bundle

    src = write_bundle(tmp_path / "src", {"model.onnx": models["fp32"]}, sample_card(SMALL_CFG, name="small"))
    recipe = next(r for r in CANDIDATES if r.fmt == WEIGHTS_ONLY_FORMAT)
    out = requantize_bundle(src, _windows(range(4)), tmp_path / "w", recipe)
    assert quantization_format(verify_bundle(out).card) == WEIGHTS_ONLY_FORMAT
    opened = []

    def recording(path, threads=1, *, fold_weights=False):
        opened.append((Path(path).name, fold_weights))
        return open_session(path, threads, fold_weights=fold_weights)

    monkeypatch.setattr(edgeemo.bundle, "open_session", recording)
    verify_bundle(out)
    assert sorted(opened) == [("model.int8.onnx", True), ("model.onnx", False)]
    x = _windows(range(60, 62))
    got = EmotionModel.load(out).predict_windows(x)  # a session with the weights folded at load
    plain = open_session(out / "model.int8.onnx").run(None, {"mel": x})[0]  # dequantizing on every run
    assert np.abs(got - plain).max() <= 1e-4


def test_requantize_bundle_writes_a_verified_float_head_bundle(models, tmp_path):
    src = write_bundle(tmp_path / "src", {"model.onnx": models["fp32"]}, sample_card(SMALL_CFG, name="small"))
    out = requantize_bundle(src, _windows(range(4)), tmp_path / "rq")
    b = verify_bundle(out)
    assert b.card["default_model"] == "model.int8.onnx" and "model.int8.onnx" in b.files
    assert b.card["quantization"]["recipe"]["float_head"] is True and b.card["quantization"]["calibration_windows"]
    assert (out / "model.onnx").read_bytes() != b""  # fp32 model kept
    x = _windows(range(40, 43))
    q = EmotionModel.load(out).predict_windows(x)
    f = EmotionModel.load(out, prefer_int8=False).predict_windows(x)
    assert np.abs(q - f).max() <= MAX_INT8_ERROR and np.abs(q).max() <= 1.0


# --- the shipped bundle on real audio ------------------------------------------------------------------
# Bounds for a bundle's int8 model on real music (4q-dev MP3s), stated in docs/hardening.md:
MAX_CHUNKING_WINDOW = 0.02  # per window, between chunkings of one 8 kHz stream (2 x the old 2/255 output step)
MAX_CHUNKING_SONG = 0.005  # per song mean
MAX_I16_SONG_EXCESS = 0.03  # per song mean: int8's int16-vs-float change may exceed fp32's by this much


def _real_clips(n: int) -> list[Path]:
    from tests.realdata import SHARED_DATA

    files = sorted((SHARED_DATA / "4q-dev" / "audio").glob("*.mp3"))[-n:]
    if len(files) < n:
        pytest.skip("needs the 4q-dev clips in shared/data")
    return files


def test_shipped_int8_model_is_stable_on_real_audio():
    from edgeemo.bundle import default_bundle_path
    from edgeemo.errors import BundleError
    from edgeemo.runtime.audio import load_audio, resample

    try:
        path = default_bundle_path()
    except BundleError:
        pytest.skip("no reference bundle")
    clips = _real_clips(3)
    q8, fp = EmotionModel.load(path), EmotionModel.load(path, prefer_int8=False)
    if q8.model_file == fp.model_file:
        pytest.skip("the reference bundle ships no int8 model")
    cfg = q8.feature_config
    for clip in clips:
        x = load_audio(clip, cfg.sample_rate, end_s=20.0)
        i16 = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
        song = {}
        for name, m in (("int8", q8), ("fp32", fp)):
            a, b = m.predict_signal(x, cfg.sample_rate), m.predict_signal(i16, cfg.sample_rate)
            for p in (a, b):
                values = np.concatenate([p.valence, p.arousal])
                assert values.min() >= -1.0 and values.max() <= 1.0
            song[name] = max(
                abs(a.summary["valence"] - b.summary["valence"]), abs(a.summary["arousal"] - b.summary["arousal"])
            )
        assert song["int8"] <= song["fp32"] + MAX_I16_SONG_EXCESS, (clip.name, song)
        x8 = resample(x, cfg.sample_rate, 8000)
        runs = []
        for chunk in (len(x8), 4096, 333):
            stream = q8.stream(8000)
            parts = [stream.push(x8[i : i + chunk]) for i in range(0, len(x8), chunk)] + [stream.flush()]
            runs.append(np.concatenate([np.stack([p.valence, p.arousal], 1) for p in parts if len(p)]))
        for other in runs[1:]:
            assert np.abs(other - runs[0]).max() <= MAX_CHUNKING_WINDOW, clip.name
            assert np.abs(other.mean(0) - runs[0].mean(0)).max() <= MAX_CHUNKING_SONG, clip.name
