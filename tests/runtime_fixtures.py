"""Tiny hand-checkable bundles and test clips for runtime, bundle and live tests.

:func:`make_test_bundle` exports a fixed linear function of per-band means (with
torch, test-side only) and writes it with :func:`edgeemo.bundle.write_bundle`;
:func:`reference_predict` computes the same numbers in numpy from
:func:`edgeemo.features.log_mel`, so runtime outputs can be checked by hand.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from pathlib import Path

import numpy as np

from edgeemo.bundle import write_bundle
from edgeemo.features import FeatureConfig, frame_windows, log_mel, pad_to_window

SMALL_CFG = FeatureConfig(n_mels=32, n_frames=64, hop_length=500, n_fft=1024)  # 2.08 s windows, 0.5 s hop


def linear_weights(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """``W`` (2, n_mels) and ``b`` (2,): valence ~ low minus high bands, arousal ~ overall loudness."""
    x = np.linspace(-1.0, 1.0, cfg.n_mels, dtype=np.float32)
    w_v = -x * (8.0 / cfg.n_mels)  # more low-band than high-band energy -> higher valence
    w_a = np.full(cfg.n_mels, 2.0 / cfg.n_mels, np.float32) + 0.5 * x / cfg.n_mels  # louder -> higher arousal
    w = np.stack([w_v, w_a]).astype(np.float32)
    b = np.array([0.0, -1.5], np.float32)
    return w, b


def reference_windows_predict(windows: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """numpy version of the test model: ``(B, n_mels, n_frames)`` windows -> ``(B, 2)``."""
    w, b = linear_weights(cfg)
    means = windows.astype(np.float64).mean(axis=2)
    return np.clip(means @ w.T.astype(np.float64) + b, -1.0, 1.0)


def reference_predict(signal: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray, bool]:
    """Whole-signal reference: ``(times, (n, 2) predictions, padded)`` for a mono signal at cfg rate."""
    signal, padded = pad_to_window(np.asarray(signal, np.float32), cfg)
    windows = frame_windows(log_mel(signal, cfg), cfg)
    idx = np.arange(windows.shape[0])
    return cfg.window_center_s(idx), reference_windows_predict(windows, cfg), padded


def _build_linear(cfg: FeatureConfig, path: Path) -> None:
    """The test model as a hand-built ONNX graph (needs only ``onnx``): ReduceMean -> Gemm -> Clip."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = linear_weights(cfg)
    nodes = [
        helper.make_node("ReduceMean", ["mel"], ["band_mean"], axes=[3], keepdims=0),
        helper.make_node("Flatten", ["band_mean"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["linear"], transB=1),
        helper.make_node("Clip", ["linear", "lo", "hi"], ["valence_arousal"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
    ]
    graph = helper.make_graph(
        nodes,
        "edgeemo_test_linear",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", 1, cfg.n_mels, cfg.n_frames])],
        [helper.make_tensor_value_info("valence_arousal", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeemo-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _export_linear_torch(cfg: FeatureConfig, path: Path) -> None:
    """The same model exported from torch the way ``edgeemo export`` does (``dynamo=False``, opset 17)."""
    import torch

    w, b = linear_weights(cfg)

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(cfg.n_mels, 2)
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(w))
                self.fc.bias.copy_(torch.from_numpy(b))

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            return torch.clamp(self.fc(mel.mean(dim=3).flatten(1)), -1.0, 1.0)

    model = Linear().eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, cfg.n_mels, cfg.n_frames),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["mel"],
            output_names=["valence_arousal"],
            dynamic_axes={"mel": {0: "batch"}, "valence_arousal": {0: "batch"}},
        )


def sample_card(cfg: FeatureConfig, int8: bool = False, name: str = "test") -> dict:
    return {
        "schema_version": 1,
        "edgeemo_version": "0.1.0",
        "name": name,
        "created": _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc).isoformat(),
        "feature_config": cfg.to_dict(),
        "input": {"name": "mel", "shape": [None, 1, cfg.n_mels, cfg.n_frames], "dtype": "float32"},
        "output": {"name": "valence_arousal", "shape": [None, 2], "labels": ["valence", "arousal"], "range": [-1, 1]},
        "training_data": "none: a fixed linear function of per-band log-mel means (test bundle)",
        "metrics": {"student_fp32": {"ccc_valence": 1.0, "ccc_arousal": 1.0, "ccc_mean": 1.0}},
        "compression": {"compression": 1.0},
        "reproduce": "tests/runtime_fixtures.py make_test_bundle",
        "default_model": "model.int8.onnx" if int8 else "model.onnx",
    }


def _quantize_static(src: Path, dst: Path, cfg: FeatureConfig) -> None:
    """Static QDQ int8 (fixed scales, so results do not depend on how windows are batched).

    7-bit weights (``reduce_range``) as ``edgeemo export`` does: with 8-bit weights, x86
    CPUs without VNNI saturate u8 x s8 dot products (errors up to 0.46 measured here).
    """
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.getLogger("root").setLevel(logging.ERROR)  # "consider pre-processing" advice
    windows = [frame_windows(log_mel(mood_clip(8.0, cfg.sample_rate, seed=k), cfg), cfg)[::4] for k in range(4)]
    silence = log_mel(np.zeros(cfg.window_samples, np.float32), cfg)[None]
    calib = np.concatenate([*windows, silence]).astype(np.float32)
    batches = [{"mel": w[None, None]} for w in calib]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        reduce_range=True,
    )


def make_test_bundle(
    tmp_dir: str | Path, feature_config: FeatureConfig | None = None, int8: bool = False, exporter: str = "onnx"
) -> Path:
    """Write a bundle of the linear test model to ``tmp_dir/bundle`` and return its path.

    With ``int8`` the bundle also ships ``model.int8.onnx`` (onnxruntime static QDQ
    quantisation of the same graph, batch-independent) as its default model.
    ``exporter="torch"`` builds the graph with ``torch.onnx.export`` (needs torch) instead
    of ``onnx.helper`` (needs only onnx, fast).
    """
    cfg = feature_config or FeatureConfig()
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as work_s:
        work = Path(work_s)
        fp32 = work / "linear.onnx"
        (_export_linear_torch if exporter == "torch" else _build_linear)(cfg, fp32)
        models = {"model.onnx": fp32}
        if int8:
            q = work / "linear.int8.onnx"
            _quantize_static(fp32, q, cfg)
            models["model.int8.onnx"] = q
        return write_bundle(tmp_dir / "bundle", models, sample_card(cfg, int8))


# --- clips ------------------------------------------------------------------------------
def mood_clip(seconds: float, sample_rate: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A test clip whose spectrum changes every ~1.5 s (tones, noise, level changes), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    seg = (t // 1.5).astype(int)
    n_seg = int(seg.max()) + 1
    f0 = rng.uniform(80, 2000, n_seg)[seg]
    level = rng.uniform(0.05, 0.4, n_seg)[seg]
    noise_level = rng.uniform(0.0, 0.1, n_seg)[seg]
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = level * (np.sin(phase) + 0.3 * np.sin(3 * phase)) + noise_level * rng.standard_normal(n)
    x = np.clip(x, -0.95, 0.95).astype(np.float32)
    if channels == 1:
        return x
    gains = np.linspace(1.0, 0.3, channels, dtype=np.float32)
    return np.stack([x * g for g in gains], axis=1) + 0.01 * rng.standard_normal((n, channels)).astype(np.float32)


_BUNDLES: dict[tuple[FeatureConfig, bool], Path] = {}


def cached_bundle(tmp_path_factory, feature_config: FeatureConfig = SMALL_CFG, int8: bool = False) -> Path:
    """One test bundle per (config, int8) for the whole session. Read-only: copy it before tampering."""
    key = (feature_config, int8)
    if key not in _BUNDLES:
        _BUNDLES[key] = make_test_bundle(tmp_path_factory.mktemp("bundle"), feature_config, int8)
    return _BUNDLES[key]


def write_clip(path: str | Path, signal: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> Path:
    """Write a test clip (float WAV by default, so decoding returns exactly these samples)."""
    import soundfile as sf

    sf.write(str(path), signal, sample_rate, subtype=subtype)
    return Path(path)
