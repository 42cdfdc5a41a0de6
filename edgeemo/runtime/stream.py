"""Streaming prediction: push audio chunks of any size, get the valence/arousal windows they complete.

Owns the one path from samples to per-window predictions, used by live input *and*
by :meth:`EmotionModel.predict_file` (which pushes the file's decoded blocks through a
:class:`StreamingPredictor`), so a stream and a file give the same numbers:

    samples (any rate, mono or (n, channels)) -> checks -> downmix -> StreamResampler
      -> LogMelStream (exact chunked frames) -> windows every ``window_hop_frames``
      -> one ONNX run per push -> optional EMA smoothing -> :class:`PredictionChunk`

Per-stream state lives here; the model (an onnxruntime session) is shared and
thread-safe, so many predictors in many threads may use one model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeemo.errors import AudioError, EdgeemoError
from edgeemo.features import FeatureConfig, LogMelStream, frame_windows, log_mel, pad_to_window
from edgeemo.mood import MOOD_NAMES, MOOD_OF_QUADRANT, mood_name, quadrant_code
from edgeemo.runtime.audio import SILENCE_PEAK, StreamResampler, to_mono
from edgeemo.runtime.limits import check_sample_rate

if TYPE_CHECKING:
    from edgeemo.runtime.model import EmotionModel

MAX_SAMPLE_ABS = 1000.0  # float audio is nominally in [-1, 1]; 60 dB above full scale means a scaling bug
MAX_CHANNELS = 64
QUADRANTS: dict[str, str] = MOOD_OF_QUADRANT  # quadrant code -> mood name (the vocabulary is edgeemo.mood)
QUADRANT_WORDS = MOOD_NAMES
quadrant_label = quadrant_code  # older name of quadrant_code, kept for code written against it
quadrant = mood_name  # older name of mood_name (it returns the mood word, not the code)


@dataclass
class PredictionChunk:
    """Windows completed by one :meth:`StreamingPredictor.push` (possibly none).

    ``times`` are window centre times in seconds from the start of the stream;
    ``padded`` is True only for the single zero-padded window :meth:`flush` makes
    from a stream shorter than one window.
    """

    times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    valence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    arousal: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    padded: bool = False

    def __len__(self) -> int:
        return int(self.times.size)

    def __iter__(self) -> Iterator[tuple[float, float, float]]:
        for t, v, a in zip(self.times, self.valence, self.arousal, strict=True):
            yield float(t), float(v), float(a)

    def quadrants(self) -> list[str]:
        """``"Q1"``..``"Q4"`` per window."""
        return [quadrant_code(v, a) for v, a in zip(self.valence, self.arousal, strict=True)]

    def moods(self) -> list[str]:
        """``"happy"``/``"tense"``/``"sad"``/``"calm"`` per window."""
        return [mood_name(v, a) for v, a in zip(self.valence, self.arousal, strict=True)]

    @staticmethod
    def concat(chunks: list[PredictionChunk]) -> PredictionChunk:
        chunks = [c for c in chunks if len(c)]
        if not chunks:
            return PredictionChunk()
        return PredictionChunk(
            times=np.concatenate([c.times for c in chunks]),
            valence=np.concatenate([c.valence for c in chunks]),
            arousal=np.concatenate([c.arousal for c in chunks]),
            padded=any(c.padded for c in chunks),
        )


def check_smoothing(smoothing: float) -> float:
    try:
        s = float(smoothing)
    except (TypeError, ValueError):
        raise EdgeemoError(f"smoothing must be a number in [0, 1), got {smoothing!r}") from None
    if not 0.0 <= s < 1.0:
        raise EdgeemoError(f"smoothing must be in [0, 1) (0 = none), got {smoothing!r}")
    return s


def ema_smooth(
    va: np.ndarray, smoothing: float, state: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """EMA over ``(n, 2)`` predictions: ``s = c*s + (1-c)*x``, starting from the first window (or ``state``).

    Returns the smoothed series and the state to carry into the next call; ``smoothing`` 0 returns ``va``.
    """
    if smoothing <= 0:
        return va, state
    c = np.float32(smoothing)
    out = np.empty_like(va)
    for i in range(len(va)):
        state = va[i].copy() if state is None else c * state + (1 - c) * va[i]
        out[i] = state
    return out, state


def as_mono(samples: Any, source: str = "stream") -> np.ndarray:
    """Validate pushed samples and return them as mono float32.

    Accepts ``(n,)`` or ``(n, channels)`` (averaged) floats, or int16/int32 PCM (scaled
    to [-1, 1]). Raises :class:`AudioError` for other dtypes or shapes, NaN/inf, or
    magnitudes above :data:`MAX_SAMPLE_ABS`.
    """
    try:
        arr = np.asarray(samples)
    except Exception as exc:  # ragged lists, exotic objects
        raise AudioError(f"samples are not a numeric array ({type(exc).__name__})", path=source) from None
    kind = arr.dtype.kind
    if kind == "i" and arr.dtype.itemsize in (2, 4):
        arr = arr.astype(np.float32) / np.float32(2 ** (8 * arr.dtype.itemsize - 1))
    elif kind != "f":
        raise AudioError(
            f"unsupported sample dtype {arr.dtype} (push float audio in [-1, 1] or int16/int32 PCM)", path=source
        )
    if arr.ndim == 2:
        if arr.shape[1] == 0 or arr.shape[1] > MAX_CHANNELS:
            raise AudioError(
                f"expected (samples, channels) with 1..{MAX_CHANNELS} channels, got shape {arr.shape}"
                + (" (channels-first? transpose it)" if arr.shape[0] and arr.shape[0] <= MAX_CHANNELS else ""),
                path=source,
            )
    elif arr.ndim != 1:
        raise AudioError(f"expected audio of shape (samples,) or (samples, channels), got {arr.shape}", path=source)
    if arr.size:
        finite = np.isfinite(arr)
        if not finite.all():
            raise AudioError(f"{int(np.count_nonzero(~finite))} NaN/inf sample(s) in the audio", path=source)
        peak = float(np.max(np.abs(arr)))
        if peak > MAX_SAMPLE_ABS:
            raise AudioError(
                f"sample magnitude {peak:.3g} is out of range (expected float audio in [-1, 1])", path=source
            )
    return to_mono(arr.astype(np.float32, copy=False))


class StreamingPredictor:
    """Chunked valence/arousal prediction over one audio stream (create with :meth:`EmotionModel.stream`).

    ``sample_rate`` must be a whole number of Hz within
    :data:`edgeemo.runtime.limits.MIN_SAMPLE_RATE`..:data:`~edgeemo.runtime.limits.MAX_SAMPLE_RATE`
    (else a one-line :class:`EdgeemoError`). ``push(samples)`` takes any number of samples
    at ``sample_rate`` (1-D mono or
    ``(n, channels)``, downmixed) and returns the windows they complete; ``flush()``
    ends the stream (a stream shorter than one window gives one zero-padded window,
    flagged ``padded``); ``reset()`` starts over. Pushing a signal in any chunking gives
    the same windows as pushing it whole. Not itself thread-safe: use one per stream.
    """

    def __init__(self, model: EmotionModel, sample_rate: int, *, smoothing: float = 0.0, source: str = "stream"):
        try:
            sr = check_sample_rate(sample_rate, f"{source}: sample rate")
        except EdgeemoError as exc:  # a rate is a property of the audio: AudioError, as for its samples
            raise AudioError(str(exc)) from None
        self.model = model
        self.cfg: FeatureConfig = model.feature_config
        self.sample_rate = sr
        self.smoothing = check_smoothing(smoothing)
        self.source = source
        self._resampler = StreamResampler(sr, self.cfg.sample_rate)
        self._mel = LogMelStream(self.cfg)
        self.reset()

    # --- state ------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything pushed so far (same as a new predictor)."""
        self._resampler.reset()
        self._mel.reset()
        self._frames = np.zeros((self.cfg.n_mels, 0), np.float32)
        self._skip = 0  # frames to discard before the next window start (window hop > window)
        self._head: list[np.ndarray] = []  # model-rate samples kept while the stream is shorter than one window
        self._ema: np.ndarray | None = None
        self.windows_emitted = 0
        self.samples_in = 0  # input samples pushed, at the input rate
        self.samples_model = 0  # samples at the model rate
        self.peak = 0.0  # max |sample| at the model rate
        self.low = math.inf  # min and max input sample (for the "silent" rule, see :attr:`silent`)
        self.high = -math.inf
        self.flushed = False
        self.padded = False

    @property
    def seconds(self) -> float:
        """Seconds of audio pushed so far."""
        return self.samples_in / self.sample_rate

    @property
    def swing(self) -> float:
        """Half the peak-to-peak range of the input samples pushed so far (0 before any)."""
        return (self.high - self.low) / 2 if self.samples_in else 0.0

    @property
    def silent(self) -> bool:
        """True when the input so far carries no signal: :attr:`swing` below
        :data:`edgeemo.runtime.audio.SILENCE_PEAK` (-100 dBFS).

        The rule is judged on the input samples, before resampling, so it does not depend
        on the input rate: digital silence, a constant (DC-only) signal at any level and a
        single sample are all silent. A DC offset under real audio does not make it silent.
        """
        return self.swing < SILENCE_PEAK

    # --- pushing ----------------------------------------------------------------
    def push(self, samples: Any) -> PredictionChunk:
        """Add samples; returns the windows they complete (possibly none)."""
        if self.flushed:
            raise EdgeemoError("stream already flushed; call reset() to start a new one")
        mono = as_mono(samples, self.source)
        if mono.size:
            self.low = min(self.low, float(mono.min()))
            self.high = max(self.high, float(mono.max()))
        self.samples_in += mono.size
        return self._feed(self._resampler.push(mono))

    def flush(self) -> PredictionChunk:
        """End the stream: drain the resampler; pad a stream shorter than one window to one window.

        Any stream that received at least one sample yields at least one window: one too
        short for a window (even a single sample, which the resampler may turn into no
        model-rate sample at all) gives exactly one zero-padded window, flagged ``padded``,
        at every input rate. An empty stream yields none.
        """
        if self.flushed:
            return PredictionChunk()
        chunk = self._feed(self._resampler.push(np.zeros(0, np.float32), last=True))
        self.flushed = True
        if self.windows_emitted == 0 and self.samples_in > 0:
            head = np.concatenate(self._head) if self._head else np.zeros(0, np.float32)
            signal, padded = pad_to_window(head, self.cfg)
            window = log_mel(signal, self.cfg)[None, :, : self.cfg.n_frames]
            self._head = []
            self.padded = padded
            out = self._predict(window[:, None], np.zeros(1, np.int64))
            out.padded = padded
            return PredictionChunk.concat([chunk, out]) if len(chunk) else out
        return chunk

    def _feed(self, samples: np.ndarray) -> PredictionChunk:
        if samples.size == 0:
            return PredictionChunk()
        self.samples_model += samples.size
        self.peak = max(self.peak, float(np.max(np.abs(samples))))
        if self.windows_emitted == 0:
            self._head.append(samples.copy())
        frames = self._mel.push(samples)
        if self._skip:
            drop = min(self._skip, frames.shape[1])
            frames, self._skip = frames[:, drop:], self._skip - drop
        if frames.shape[1] == 0:
            return PredictionChunk()
        self._frames = np.concatenate([self._frames, frames], axis=1) if self._frames.shape[1] else frames
        windows = frame_windows(self._frames, self.cfg)
        n = windows.shape[0]
        if n == 0:
            return PredictionChunk()
        batch = np.ascontiguousarray(windows[:, None], dtype=np.float32)
        index = self.windows_emitted + np.arange(n)
        consumed = n * self.cfg.window_hop_frames
        if consumed >= self._frames.shape[1]:
            self._skip = consumed - self._frames.shape[1]
            self._frames = np.zeros((self.cfg.n_mels, 0), np.float32)
        else:
            self._frames = self._frames[:, consumed:].copy()
        self._head = []
        return self._predict(batch, index)

    def _predict(self, batch: np.ndarray, index: np.ndarray) -> PredictionChunk:
        va = self.model.predict_windows(batch)
        self.windows_emitted += len(index)
        va, self._ema = ema_smooth(va, self.smoothing, self._ema)
        return PredictionChunk(
            times=np.asarray(self.cfg.window_center_s(index), dtype=np.float64),
            valence=va[:, 0].astype(np.float32),
            arousal=va[:, 1].astype(np.float32),
        )
