"""The one log-mel front end (numpy only), shared by training and the runtime.

Owns :class:`FeatureConfig` (every number that shapes a feature, saved in each
checkpoint and bundle), the mel filterbank (Slaney, area-normalised, as librosa's default; or
HTK with unnormalised triangles, as YAMNet's), the fixed log scaling, the whole-signal
:func:`log_mel` and the chunk-by-chunk :class:`LogMelStream`. The STFT is uncentred (frame
``i`` covers samples ``[i*hop, i*hop + frame_length)``, a periodic Hann window of
``frame_length`` samples zero-padded to ``n_fft``) and the scaling uses fixed constants with no
per-clip normalisation, so frames computed from a stream in arbitrary chunks equal the frames
of the whole file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgeemo.errors import EdgeemoError

# Upper bounds that keep a config from an untrusted card from allocating without bound
# (a window is n_mels x n_frames floats; the filterbank n_mels x n_fft/2).
MAX_SIZES = {
    "sample_rate": 1_000_000,
    "n_fft": 65_536,
    "hop_length": 65_536,
    "n_mels": 1_024,
    "n_frames": 10_000,
    "window_hop_s": 3_600.0,
}
_CHUNK_FRAMES = 128


def _short(value: Any) -> str:
    """A number for an error message, at most 23 characters."""
    text = repr(value)
    return text if len(text) <= 23 else text[:20] + "..."


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that defines a log-mel window. Serialised into checkpoints and bundles.

    The log scaling is ``(10*log10(mel_power + amin) - db_offset) / db_scale``: fixed
    constants, so a stream and a whole file give identical features.

    Every field must be a finite number (integers where the field is an int) within
    :data:`MAX_SIZES`; anything else (NaN, a string, ``True``, ``n_fft = 10**12``) is a
    one-line :class:`EdgeemoError`, since configs also come from untrusted bundle cards.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 500
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 8000.0
    n_frames: int = 128
    window_hop_s: float = 0.5
    amin: float = 1e-8
    db_offset: float = -30.0
    db_scale: float = 20.0
    # added later; left out of to_dict() at these values, so older configs keep their digests and cards
    win_length: int = 0  # samples of the Hann window, zero-padded to n_fft; 0: n_fft
    htk: int = 0  # 1: HTK mel scale with unnormalised triangles (YAMNet's); 0: Slaney, area-normalised
    power: int = 2  # 2: mel of the power spectrum; 1: of the magnitude spectrum

    def __post_init__(self) -> None:
        problems = []
        # normalise numeric types so equal configs serialise (and digest) identically: fmax=8000 is fmax=8000.0
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                problems.append(f"{f.name} must be a number, got {type(v).__name__}")
            elif isinstance(v, (int, np.integer)) and abs(int(v)) > 2**53:  # also keeps float() from overflowing
                problems.append(f"{f.name} {_short(v)} is too large")
            elif isinstance(v, (int, np.integer)):
                object.__setattr__(self, f.name, float(v) if f.type == "float" else int(v))
            elif not math.isfinite(v):
                problems.append(f"{f.name} must be finite, got {v}")
            elif f.type == "float":
                object.__setattr__(self, f.name, float(v))
            elif float(v).is_integer():
                object.__setattr__(self, f.name, int(v))
            else:
                problems.append(f"{f.name} must be an integer, got {v}")
        if problems:  # the checks below need finite numbers
            raise EdgeemoError("invalid FeatureConfig: " + "; ".join(problems))
        for name, high in MAX_SIZES.items():
            if getattr(self, name) > high:
                problems.append(f"{name} {_short(getattr(self, name))} is above {high}")
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            problems.append("sample_rate, n_fft and hop_length must be positive")
        if self.n_mels <= 0 or self.n_frames <= 0:
            problems.append("n_mels and n_frames must be positive")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}..{self.fmax}")
        hop_samples = self.window_hop_s * self.sample_rate
        if self.window_hop_s <= 0 or abs(hop_samples / self.hop_length - round(hop_samples / self.hop_length)) > 1e-9:
            problems.append(
                f"window_hop_s * sample_rate ({hop_samples:g}) must be a multiple of hop_length ({self.hop_length})"
            )
        if self.amin <= 0 or self.db_scale <= 0:
            problems.append("amin and db_scale must be positive")
        if not 0 <= self.win_length <= self.n_fft:
            problems.append(f"win_length must be 0 (n_fft) or 1..n_fft, got {self.win_length}")
        if self.htk not in (0, 1) or self.power not in (1, 2):
            problems.append(f"htk must be 0 or 1 and power 1 or 2, got {self.htk} and {self.power}")
        if problems:
            raise EdgeemoError("invalid FeatureConfig: " + "; ".join(problems))

    # --- derived sizes -------------------------------------------------------------
    @property
    def frame_length(self) -> int:
        """Samples one STFT frame covers (the Hann window's length)."""
        return self.win_length or self.n_fft

    @property
    def window_hop_frames(self) -> int:
        """Frames between the starts of consecutive windows."""
        return round(self.window_hop_s * self.sample_rate / self.hop_length)

    @property
    def window_samples(self) -> int:
        """Samples one window of ``n_frames`` frames spans."""
        return (self.n_frames - 1) * self.hop_length + self.frame_length

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def shape(self) -> tuple[int, int]:
        """Model input shape of one window, ``(n_mels, n_frames)``."""
        return (self.n_mels, self.n_frames)

    def n_windows(self, n_frames_total: int) -> int:
        """Number of whole windows in a signal of ``n_frames_total`` frames."""
        if n_frames_total < self.n_frames:
            return 0
        return (n_frames_total - self.n_frames) // self.window_hop_frames + 1

    def window_start_s(self, index: np.ndarray | int) -> np.ndarray:
        """Start time (s) of window ``index``."""
        return np.asarray(index) * self.window_hop_frames * self.hop_length / self.sample_rate

    def window_center_s(self, index: np.ndarray | int) -> np.ndarray:
        """Centre time (s) of window ``index``: the time its prediction is reported at."""
        return self.window_start_s(index) + self.window_samples / (2 * self.sample_rate)

    # --- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name, neutral in _ADDED_DEFAULTS.items():
            if d[name] == neutral:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        if not isinstance(data, dict):
            raise EdgeemoError(f"FeatureConfig must be an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgeemoError(f"FeatureConfig has no field(s) {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureConfig:
        return cls.from_dict(json.loads(text))

    def digest(self) -> str:
        """Short stable hash, used to key feature caches."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> FeatureConfig:
        return dataclasses.replace(self, **changes)


# fields added after the first release, with their defaults: to_dict() omits them at these values
_ADDED_FIELDS = ("win_length", "htk", "power")
_ADDED_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FeatureConfig) if f.name in _ADDED_FIELDS}


# --- filterbank -------------------------------------------------------------------------
def hz_to_mel(freqs: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa with htk=False."""
    freqs = np.asarray(freqs, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = freqs >= min_log_hz
    return np.where(log_t, min_log_mel + np.log(np.maximum(freqs, min_log_hz) / min_log_hz) / logstep, mels)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    return np.where(log_t, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def hz_to_mel_htk(freqs: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, ``2595 log10(1 + f/700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(freqs, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mels, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def _mel_filterbank_cached(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool = False
) -> np.ndarray:
    n_bins = n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
    to_mel, to_hz = (hz_to_mel_htk, mel_to_hz_htk) if htk else (hz_to_mel, mel_to_hz)
    mel_f = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if not htk:
        enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])  # Slaney area normalisation
        weights *= enorm[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """The config's mel filterbank (Slaney-normalised or HTK triangles), (n_mels, n_fft//2 + 1) float32, read-only."""
    return _mel_filterbank_cached(
        cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.fmin), float(cfg.fmax), bool(cfg.htk)
    )


@lru_cache(maxsize=16)
def hann_window(length: int) -> np.ndarray:
    """The periodic Hann window of ``length`` samples, float64, read-only.

    As ``scipy.signal.get_window('hann', length, fftbins=True)``, librosa's default window. Kept
    float64 (so the FFT runs in float64, as librosa's does): float32 rounding of the window raises
    the sidelobe floor and costs ~1e-4 of log-mel accuracy in quiet bands next to loud tones.
    """
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    w.setflags(write=False)
    return w


# --- log-mel ----------------------------------------------------------------------------
def log_scale(mel_power: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The fixed log scaling applied to mel power (no per-clip statistics), float32.

    Computed in float64 and rounded once to float32, so any host that evaluates the same
    formula in float64 (the raw-audio ONNX model's front end does) gets the same float32
    values, bit for bit in all but ~1e-7 of them.
    """
    db = 10.0 * np.log10(np.asarray(mel_power, dtype=np.float64) + cfg.amin)
    return ((db - cfg.db_offset) / cfg.db_scale).astype(np.float32)


def librosa_log_mel(signal: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The same log-mel computed by librosa (needs the ``[train]`` extra): the parity reference.

    ``librosa.feature.melspectrogram`` with this config's STFT and mel parameters (uncentred),
    then :func:`log_scale`. librosa centres a window shorter than ``n_fft`` inside the frame; the
    signal is shifted so its frames cover the same samples as :func:`log_mel`'s. Used by the
    parity tests and the feature benchmark; the runtime never calls it.
    """
    import librosa

    y = np.asarray(signal, dtype=np.float32)
    if cfg.win_length:
        left = (cfg.n_fft - cfg.win_length) // 2
        y = np.pad(y, (left, cfg.n_fft - cfg.win_length - left))
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.frame_length,
        center=False,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        power=float(cfg.power),
        htk=bool(cfg.htk),
        norm=None if cfg.htk else "slaney",
    )
    return log_scale(mel, cfg)


def mel_power(signal: np.ndarray, cfg: FeatureConfig, dtype: type = np.float32) -> np.ndarray:
    """Mel spectrogram (uncentred STFT; of the power spectrum, or the magnitude when ``cfg.power`` is 1),
    shape ``(n_mels, n_frames)``.

    FFT and mel matrix product run in float64 (the float32 filterbank weights upcast); the
    result is returned as ``dtype`` (:func:`log_mel` keeps float64 until the log).
    """
    x = np.ascontiguousarray(signal, dtype=np.float32)
    if x.ndim != 1:
        raise EdgeemoError(f"log-mel expects a mono 1-D signal, got shape {x.shape}")
    length = cfg.frame_length
    n_total = 0 if x.size < length else (x.size - length) // cfg.hop_length + 1
    out = np.empty((cfg.n_mels, n_total), dtype=dtype)
    if n_total == 0:
        return out
    frames = sliding_window_view(x, length)[:: cfg.hop_length][:n_total]
    window = hann_window(length)
    fb = mel_filterbank(cfg).astype(np.float64)
    for start in range(0, n_total, _CHUNK_FRAMES):
        block = frames[start : start + _CHUNK_FRAMES] * window
        spec = np.fft.rfft(block, n=cfg.n_fft, axis=1)
        power = spec.real**2 + spec.imag**2
        out[:, start : start + block.shape[0]] = fb @ (power if cfg.power == 2 else np.sqrt(power)).T
    return out


def log_mel(signal: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel frames of a mono float signal at ``cfg.sample_rate``: ``(n_mels, n_frames)`` float32."""
    return log_scale(mel_power(signal, cfg, np.float64), cfg)


def frame_windows(frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Cut ``(n_mels, T)`` frames into ``(n_windows, n_mels, n_frames)`` windows (a view)."""
    n = cfg.n_windows(frames.shape[1])
    if n == 0:
        return np.empty((0, cfg.n_mels, cfg.n_frames), dtype=frames.dtype)
    view = sliding_window_view(frames, cfg.n_frames, axis=1)  # (n_mels, T - n_frames + 1, n_frames)
    return view[:, :: cfg.window_hop_frames][:, :n].transpose(1, 0, 2)


class LogMelStream:
    """Chunk-by-chunk log-mel: ``push`` any number of samples, get the frames they complete.

    Concatenating the outputs of successive pushes equals :func:`log_mel` of the whole
    signal exactly (same arithmetic on the same samples).
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self._buf = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add mono samples; returns the newly completed frames, ``(n_mels, k)``."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._buf, samples]) if self._buf.size else samples
        frames = log_mel(buf, self.cfg)
        consumed = frames.shape[1] * self.cfg.hop_length
        self._buf = buf[consumed:].copy()
        self.frames_emitted += frames.shape[1]
        return frames


def pad_to_window(signal: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, bool]:
    """Zero-pad a signal shorter than one window to exactly one window.

    Returns ``(signal, padded)``. Training and the runtime both pad this way (silence
    after the clip), so a short clip gives the same single window everywhere.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if signal.size >= cfg.window_samples:
        return signal, False
    return np.concatenate([signal, np.zeros(cfg.window_samples - signal.size, np.float32)]), True
