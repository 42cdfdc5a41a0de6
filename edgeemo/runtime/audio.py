"""Audio decoding, downmixing, resampling and validation (soundfile + soxr, no torch).

Owns everything between a file (or a stream of samples at any rate) and a mono
float32 signal at the model's sample rate. Bad input raises
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
        self._stream = None if self.sr_in == self.sr_out else soxr.ResampleStream(
            self.sr_in, self.sr_out, 1, dtype="float32", quality="HQ"
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


def _open(path: str | Path) -> sf.SoundFile:
    p = Path(path)
    if not p.exists():
        raise AudioError("no such file", path=p)
    if p.is_dir():
        raise AudioError("is a directory, not an audio file", path=p)
    if p.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)", path=p)
    try:
        return sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = str(exc).split(":")[-1].strip() or "unknown decoder error"
        raise AudioError(f"unsupported or corrupt audio ({reason})", path=p) from None


def audio_info(path: str | Path) -> tuple[int, float, int]:
    """``(sample_rate, duration_s, channels)`` of a file, from its header."""
    with _open(path) as f:
        frames = f.frames if f.frames and f.frames > 0 else 0
        return f.samplerate, frames / f.samplerate, f.channels


def iter_audio_blocks(
    path: str | Path,
    sample_rate: int,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    block_s: float = _BLOCK_SECONDS,
) -> Iterator[np.ndarray]:
    """Decode a file block by block as mono float32 at ``sample_rate``.

    Raises :class:`AudioError` for a missing, corrupt, zero-length or NaN-holding file.
    Silence is not checked here (a stream may legitimately be quiet); see :func:`load_audio`.
    """
    f = _open(path)
    with f:
        sr_in = f.samplerate
        resampler = StreamResampler(sr_in, sample_rate)
        try:
            if start_s > 0:
                first = round(start_s * sr_in)
                if f.frames > 0 and first >= f.frames:  # not a 1-sample "excerpt" of the last sample
                    raise AudioError(
                        f"start_s {start_s:g} is past the end of the audio ({f.frames / sr_in:.3f} s)", path=path
                    )
                f.seek(min(first, max(f.frames - 1, 0)))
            remaining = None if end_s is None else max(0, round((end_s - start_s) * sr_in))
            block = max(1, int(block_s * sr_in))
            got_any = False
            while remaining is None or remaining > 0:
                n = block if remaining is None else min(block, remaining)
                data = f.read(n, dtype="float32", always_2d=True)
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
        except sf.LibsndfileError as exc:
            raise AudioError(f"decoding failed ({exc})", path=path) from None


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
