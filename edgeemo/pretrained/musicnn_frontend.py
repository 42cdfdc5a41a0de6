"""musicnn's input features in numpy (no torch): config, log-compressed mel, 3 s patches.

Owns :data:`MUSICNN_FEATURES` (16 kHz, 512-point FFT, hop 256, 96 Slaney mel bands
up to 8 kHz, 187-frame = 2.992 s patches), :func:`musicnn_input` and the patching
helpers. The mel itself is the project's one implementation,
:func:`edgeemo.features.mel_power` (uncentred STFT; musicnn used librosa's centred
one, so frame ``i`` here is frame ``i + 1`` of librosa shifted by half a frame, which
does not matter for a model trained on random 3 s crops).
"""

from __future__ import annotations

import numpy as np

from edgeemo.errors import EdgeemoError
from edgeemo.features import FeatureConfig, mel_power

N_FRAMES = 187
N_MELS = 96

MUSICNN_FEATURES = FeatureConfig(
    sample_rate=16000,
    n_fft=512,
    hop_length=256,
    n_mels=N_MELS,
    fmin=0.0,
    fmax=8000.0,
    n_frames=N_FRAMES,
    window_hop_s=N_FRAMES * 256 / 16000,
)


def musicnn_input(signal16k: np.ndarray) -> np.ndarray:
    """The network input for a mono 16 kHz signal: ``log10(10000 * mel_power + 1)``, shape ``(T, 96)``, float32.

    Computed in float32 on purpose. musicnn's own ``extractor.batch_data`` casts the
    mel power to float16 *before* multiplying by 10000; float16 tops out at 65504, so
    every bin with power above ~6.55 becomes ``inf`` (a few % of bins on ordinary
    loud music), the log is ``inf`` and the network's outputs saturate, which makes
    every clip's tags look alike. Here the product stays finite.
    """
    power = mel_power(np.asarray(signal16k, dtype=np.float32), MUSICNN_FEATURES)  # (96, T)
    return np.log10(np.float32(10000.0) * power.T + np.float32(1.0)).astype(np.float32, copy=False)


def _fit(mel: np.ndarray, n_frames: int) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2:
        raise EdgeemoError(f"musicnn expects a (time, mel) array, got shape {mel.shape}")
    if mel.shape[0] < n_frames:  # short input: pad with silence (log10(0 + 1) = 0)
        mel = np.concatenate([mel, np.zeros((n_frames - mel.shape[0], mel.shape[1]), np.float32)])
    return mel


def patches(mel: np.ndarray, n_frames: int = N_FRAMES, hop: int | None = None) -> np.ndarray:
    """Split ``(T, 96)`` into patches ``(n, n_frames, 96)`` every ``hop`` frames (default: non-overlapping).

    Like musicnn, a tail shorter than a patch is dropped; an input shorter than one
    patch is padded with silence (zeros) to one patch.
    """
    hop = n_frames if hop is None else int(hop)
    if n_frames < 1 or hop < 1:
        raise EdgeemoError(f"n_frames and hop must be positive, got {n_frames}, {hop}")
    mel = _fit(mel, n_frames)
    starts = np.arange(0, mel.shape[0] - n_frames + 1, hop)
    return np.stack([mel[s : s + n_frames] for s in starts]).astype(np.float32, copy=False)


def patch_start(center_s: float, n_total: int, n_frames: int = N_FRAMES) -> int:
    """First frame of the patch centred nearest ``center_s``, clamped into ``[0, n_total - n_frames]``.

    Frame ``i`` covers samples ``[i*hop, i*hop + n_fft)``, so a patch starting at
    frame ``s`` is centred at sample ``(s + n_frames/2) * hop + (n_fft - hop)/2``,
    i.e. ``(s + 94) * 256`` for musicnn.
    """
    cfg = MUSICNN_FEATURES
    center_samples = float(center_s) * cfg.sample_rate
    offset = (n_frames * cfg.hop_length + cfg.n_fft - cfg.hop_length) / 2.0
    start = int(np.floor((center_samples - offset) / cfg.hop_length + 0.5))
    return int(min(max(start, 0), max(n_total - n_frames, 0)))


def patch_at(mel: np.ndarray, center_s: float, n_frames: int = N_FRAMES) -> np.ndarray:
    """The ``(n_frames, 96)`` patch centred at ``center_s`` s (clamped at the edges, silence-padded if short)."""
    mel = _fit(mel, n_frames)
    s = patch_start(center_s, mel.shape[0], n_frames)
    return mel[s : s + n_frames]


def patches_at(mel: np.ndarray, centers_s: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """One patch per centre time: ``(len(centers_s), n_frames, 96)``."""
    mel = _fit(mel, n_frames)
    centers = np.atleast_1d(np.asarray(centers_s, dtype=np.float64))
    out = np.empty((centers.size, n_frames, mel.shape[1]), np.float32)
    for i, c in enumerate(centers):
        s = patch_start(float(c), mel.shape[0], n_frames)
        out[i] = mel[s : s + n_frames]
    return out


def reference_signal(seed: int = 1234, seconds: float = 3.5, sr: int = 16000) -> np.ndarray:
    """The deterministic test signal (seeded harmonic tones + noise bursts) the parity reference is computed on.

    ``benchmarks/musicnn_parity.py`` feeds it to the original TensorFlow graph to write
    ``tests/data/musicnn_reference.npz``; the tests feed it to the PyTorch port.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros_like(t)
    for f0 in rng.uniform(80.0, 600.0, size=4):
        for h in range(1, 6):
            x += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
    for start in rng.uniform(0.0, seconds - 0.3, size=6):
        i = int(start * sr)
        x[i : i + int(0.2 * sr)] += rng.standard_normal(int(0.2 * sr)) * 2.0
    return (0.1 * x / np.abs(x).max()).astype(np.float32)
