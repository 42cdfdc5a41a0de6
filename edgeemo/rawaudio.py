"""PCM windows for the raw-audio model (numpy only): how a signal is cut into the model's input.

Owns the raw-audio contract's arithmetic, shared by the Python runtime, the bundle's
agreement probe and the tests (the browser page and the Node example implement the
same few lines): window ``i`` is samples ``[i * hop, i * hop + window_samples)`` of the
mono signal at the bundle's sample rate, ``hop = window_hop_frames * hop_length``; only
whole windows count; a signal shorter than one window is zero-padded to one window.
These are exactly the windows :func:`edgeemo.features.frame_windows` cuts from the
log-mel frames, so both models see the same audio.
"""

from __future__ import annotations

import numpy as np

from edgeemo.features import FeatureConfig, pad_to_window


def hop_samples(cfg: FeatureConfig) -> int:
    """Samples between the starts of consecutive windows."""
    return cfg.window_hop_frames * cfg.hop_length


def n_pcm_windows(n_samples: int, cfg: FeatureConfig) -> int:
    """Whole windows in a signal of ``n_samples`` samples (0 when shorter than one window)."""
    if n_samples < cfg.window_samples:
        return 0
    return (n_samples - cfg.window_samples) // hop_samples(cfg) + 1


def pcm_windows(signal: np.ndarray, cfg: FeatureConfig, *, pad_short: bool = True) -> np.ndarray:
    """``(n_windows, window_samples)`` float32 windows of a mono signal; a short one padded to one window."""
    x = np.ascontiguousarray(signal, dtype=np.float32).reshape(-1)
    if pad_short and 0 < x.size < cfg.window_samples:
        x = pad_to_window(x, cfg)[0]
    n, hop = n_pcm_windows(x.size, cfg), hop_samples(cfg)
    if n == 0:
        return np.zeros((0, cfg.window_samples), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(x, cfg.window_samples)[::hop][:n]
    return np.ascontiguousarray(view)


def probe_signal(cfg: FeatureConfig, n_windows: int = 3, seed: int = 0) -> np.ndarray:
    """A fixed music-like test signal spanning ``n_windows`` windows: chords, a melody, a pulse and noise."""
    rng = np.random.default_rng(seed)
    n = cfg.window_samples + (n_windows - 1) * hop_samples(cfg)
    t = np.arange(n) / cfg.sample_rate
    x = np.zeros(n)
    for f0 in (110.0, 220.0 * 2 ** (4 / 12), 220.0 * 2 ** (7 / 12), 880.0):
        x += 0.12 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
    melody = 440.0 * 2 ** (np.floor(t * 2) % 5 / 12)
    x += 0.1 * np.sin(2 * np.pi * np.cumsum(melody) / cfg.sample_rate)
    x *= 0.6 + 0.4 * (np.sin(2 * np.pi * 2.0 * t) > 0)
    x += 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


class PcmWindower:
    """Chunk-by-chunk :func:`pcm_windows`: ``push`` samples, get the windows they complete.

    ``flush`` returns one zero-padded window when the stream ended before a whole window
    (``padded`` is then True). Concatenated outputs equal :func:`pcm_windows` of the whole signal.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.hop = hop_samples(cfg)
        self._buf = np.zeros(0, np.float32)
        self._skip = 0  # samples to drop before the next window starts (hop longer than a window)
        self.emitted = 0
        self.padded = False

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._skip:
            drop = min(self._skip, x.size)
            x, self._skip = x[drop:], self._skip - drop
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        out = pcm_windows(buf, self.cfg, pad_short=False)
        consumed = out.shape[0] * self.hop
        self._skip = max(0, consumed - buf.size)
        self._buf = buf[consumed:].copy()
        self.emitted += out.shape[0]
        return out

    def flush(self) -> np.ndarray:
        if self.emitted or self._buf.size == 0:
            return np.zeros((0, self.cfg.window_samples), np.float32)
        self.padded = True
        self.emitted = 1
        out = pad_to_window(self._buf, self.cfg)[0][None]
        self._buf = np.zeros(0, np.float32)
        return out
