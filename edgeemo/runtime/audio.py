"""Audio decoding, downmixing, resampling and validation (soundfile / PyAV + soxr, no torch).

Owns everything between a file (or a stream of samples at any rate) and a mono
float32 signal at the model's sample rate; the decoders themselves (which library
reads which format, and the one-line errors for unusable paths) are
:mod:`edgeemo.runtime.decoders`. Bad input raises
:class:`edgeemo.errors.AudioError` with one line naming the file and the problem.
Long files are decoded and resampled block by block (:func:`iter_audio_blocks`), so
an hour of audio never sits in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edgeemo.errors import AudioError
from edgeemo.runtime.decoders import AudioReader, audio_extensions, open_audio
from edgeemo.runtime.limits import check_sample_rate

__all__ = [
    "SILENCE_PEAK",
    "AudioReader",
    "StreamResampler",
    "audio_extensions",
    "audio_info",
    "check_finite",
    "iter_audio_blocks",
    "load_audio",
    "open_audio",
    "resample",
    "to_mono",
    "write_wav",
]

SILENCE_PEAK = 1e-5  # -100 dBFS: a file whose peak stays below this is "all silent"
_BLOCK_SECONDS = 10.0


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels: ``(n,)`` or ``(n, channels)`` -> ``(n,)`` float32."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        return data
    if data.ndim == 2:
        return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    raise AudioError(f"expected audio of shape (samples,) or (samples, channels), got {data.shape}")


def resample(signal: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of a mono signal."""
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    signal = np.asarray(signal, dtype=np.float32)
    if sr_in == sr_out or signal.size == 0:
        return signal
    return soxr.resample(signal, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


class StreamResampler:
    """Chunked resampler whose concatenated output equals one-shot streaming of the same input."""

    def __init__(self, sr_in: int, sr_out: int) -> None:
        if sr_in <= 0 or sr_out <= 0:
            raise AudioError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._stream = (
            None
            if self.sr_in == self.sr_out
            else soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality="HQ")
        )

    def push(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)

    def reset(self) -> None:
        if self._stream is not None:
            self._stream.clear()


def check_finite(signal: np.ndarray, source: str | Path) -> None:
    """Raise if the signal holds NaN or infinite samples."""
    if not np.all(np.isfinite(signal)):
        bad = int(np.count_nonzero(~np.isfinite(signal)))
        raise AudioError(f"{bad} NaN/inf sample(s) in the audio", path=source)


def audio_info(path: str | Path) -> tuple[int, float, int]:
    """``(sample_rate, duration_s, channels)`` of a file, from its header (duration 0.0 when unknown)."""
    with open_audio(path) as f:
        return f.samplerate, (f.frames or 0) / f.samplerate, f.channels


def iter_audio_blocks(
    path: str | Path,
    sample_rate: int,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    block_s: float = _BLOCK_SECONDS,
) -> Iterator[np.ndarray]:
    """Decode a file block by block as mono float32 at ``sample_rate``.

    Raises :class:`AudioError` for a missing, unreadable, corrupt, zero-length or
    NaN-holding file, or one whose header rate is outside the documented range.
    Silence is not checked here (a stream may legitimately be quiet); see :func:`load_audio`.
    """
    sample_rate = check_sample_rate(sample_rate, "target sample rate")
    with open_audio(path) as f:
        sr_in = f.samplerate
        resampler = StreamResampler(sr_in, sample_rate)
        if start_s > 0:
            first = round(start_s * sr_in)
            if f.frames and first >= f.frames:  # not a 1-sample "excerpt" of the last sample
                raise AudioError(
                    f"start_s {start_s:g} is past the end of the audio ({f.frames / sr_in:.3f} s)", path=path
                )
            f.skip(min(first, max(f.frames - 1, 0)) if f.frames else first)
        remaining = None if end_s is None else max(0, round((end_s - start_s) * sr_in))
        block = max(1, int(block_s * sr_in))
        got_any = False
        while remaining is None or remaining > 0:
            n = block if remaining is None else min(block, remaining)
            data = f.read(n)
            if data.shape[0] == 0:
                break
            if remaining is not None:
                remaining -= data.shape[0]
            mono = to_mono(data)
            check_finite(mono, path)
            got_any = True
            out = resampler.push(mono)
            if out.size:
                yield out
        if not got_any:
            raise AudioError("no audio samples (zero-length or truncated file)", path=path)
        tail = resampler.push(np.zeros(0, np.float32), last=True)
        if tail.size:
            yield tail


def load_audio(
    path: str | Path,
    sample_rate: int,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    allow_silent: bool = False,
) -> np.ndarray:
    """Decode a whole file (or ``[start_s, end_s)``) to mono float32 at ``sample_rate``.

    Raises :class:`AudioError` (one line naming the file) if it is missing, corrupt,
    empty, holds NaN/inf samples or, unless ``allow_silent``, is all silent.
    """
    blocks = list(iter_audio_blocks(path, sample_rate, start_s=start_s, end_s=end_s))
    signal = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if signal.size == 0:
        raise AudioError("no audio samples (zero-length or truncated file)", path=path)
    if not allow_silent and float(np.max(np.abs(signal))) < SILENCE_PEAK:
        raise AudioError("audio is all silent", path=path)
    return signal


def write_wav(path: str | Path, signal: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit PCM WAV (clipped to [-1, 1])."""
    sf.write(str(path), np.clip(np.asarray(signal, dtype=np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16")
