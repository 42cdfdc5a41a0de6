"""Audio file decoders behind one reader: libsndfile (soundfile, the fast path) and FFmpeg (PyAV, optional).

Owns turning a path into an :class:`AudioReader` (native rate, ``(frames, channels)``
float32 blocks) with the right one-line :class:`AudioError` for every way a path can
be unusable: missing, a broken link or a symlink loop, permission denied, a folder,
empty, not audio at all, a sample rate outside :mod:`edgeemo.runtime.limits`.

- soundfile decodes WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, AU, CAF, W64 without any
  system library. libmpg123 inside it prints resync notes to stderr even for valid
  MP3s; those lines are swallowed (fd 2 is captured around MP3 opens and reads, and
  anything else written meanwhile is passed through).
- Anything libsndfile does not recognise (AAC/M4A/MP4, WMA, WebM, Matroska, AC-3...)
  goes to PyAV, whose wheel bundles FFmpeg (the ``formats`` extra:
  ``pip install 'edgeemo[formats]'``). PyAV is imported only for such files.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from edgeemo.errors import AudioError, EdgeemoError
from edgeemo.runtime.limits import check_sample_rate

SOUNDFILE_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc")
SOUNDFILE_EXTENSIONS += (".au", ".snd", ".caf", ".w64")
FFMPEG_EXTENSIONS = (".m4a", ".m4b", ".mp4", ".aac", ".wma", ".webm", ".mka", ".mkv", ".ac3", ".mp2", ".amr")
FFMPEG_EXTENSIONS += (".ape", ".wv", ".3gp", ".mov")
FORMATS_HINT = "pip install 'edgeemo[formats]'"

_STDERR_LOCK = threading.Lock()
_MPG123_NOISE = re.compile(rb"^(\[src/libmpg123/[^\]]*\]|Note: |Warning: |\[.*mpg123.*\] )")


def pyav_available() -> bool:
    """True when PyAV (FFmpeg) is installed, without importing it."""
    return importlib.util.find_spec("av") is not None


def audio_extensions() -> tuple[str, ...]:
    """File name extensions (lower case, with the dot) this installation decodes."""
    return SOUNDFILE_EXTENSIONS + (FFMPEG_EXTENSIONS if pyav_available() else ())


@contextmanager
def quiet_mpg123(active: bool = True) -> Iterator[None]:
    """Swallow libmpg123's stderr lines while the block runs; pass other stderr output through.

    fd 2 is process-wide, so the capture is serialised by a lock; text other threads
    write meanwhile reaches stderr when the block ends.
    """
    if not active:
        yield
        return
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon): nothing to silence
            yield
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                with suppress(AttributeError, OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(tmp.fileno(), 2)
                try:
                    yield
                finally:
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    kept = [line for line in tmp.read().splitlines(keepends=True) if not _MPG123_NOISE.match(line)]
                    if kept:
                        with suppress(OSError):
                            os.write(2, b"".join(kept))
        finally:
            os.close(saved)


def check_audio_path(path: object) -> Path:
    """``path`` as a :class:`Path` to a readable, non-empty regular file, else a one-line :class:`AudioError`."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise AudioError(f"expected a file path (str or pathlib.Path), got {type(path).__name__}")
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError("broken symbolic link" if p.is_symlink() else "no such file", path=p) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError("symbolic link loop (too many levels of symbolic links)", path=p) from None
        if exc.errno == errno.EACCES:
            raise AudioError("permission denied", path=p) from None
        raise AudioError(f"cannot open ({exc.strerror or exc})", path=p) from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError("is a directory, not an audio file", path=p)
    if not stat.S_ISREG(st.st_mode):
        raise AudioError("not a regular file (a pipe or a device?)", path=p)
    if st.st_size == 0:
        raise AudioError("empty file (0 bytes)", path=p)
    try:
        with open(p, "rb"):
            pass
    except PermissionError:
        raise AudioError("permission denied", path=p) from None
    except OSError as exc:
        raise AudioError(f"cannot open ({exc.strerror or exc})", path=p) from None
    return p


class AudioReader:
    """An open audio file at its native rate: ``samplerate``, ``channels``, ``frames`` (None if unknown).

    ``read(n)`` returns up to ``n`` frames as ``(k, channels)`` float32 (``k == 0`` at the
    end); ``skip(n)`` moves ``n`` frames ahead. Use as a context manager.
    """

    samplerate: int
    channels: int
    frames: int | None
    decoder: str

    def read(self, n: int) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def skip(self, n: int) -> None:
        while n > 0:
            got = self.read(min(n, 1 << 18)).shape[0]
            if got == 0:
                return
            n -= got

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SoundfileReader(AudioReader):
    """libsndfile through soundfile; MP3 reads run with libmpg123's stderr noise swallowed."""

    decoder = "soundfile"

    def __init__(self, f: sf.SoundFile, path: Path) -> None:
        self._f, self.path = f, path
        self.samplerate, self.channels = int(f.samplerate), int(f.channels)
        self.frames = int(f.frames) if f.frames and f.frames > 0 else 0
        self._quiet = str(f.format).upper() == "MP3"

    def read(self, n: int) -> np.ndarray:
        try:
            with quiet_mpg123(self._quiet):
                return self._f.read(n, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"decoding failed ({' '.join(str(exc).split())})", path=self.path) from None

    def skip(self, n: int) -> None:
        if self.frames:
            self._f.seek(min(self._f.tell() + n, self.frames))
        else:
            super().skip(n)

    def close(self) -> None:
        self._f.close()


class PyAVReader(AudioReader):
    """FFmpeg through PyAV: the first audio stream, converted to float32 (planar frames made ``(n, channels)``)."""

    decoder = "ffmpeg"

    def __init__(self, container: Any, path: Path) -> None:
        import av

        self._av, self._container, self.path = av, container, path
        streams = container.streams.audio
        if not streams:
            container.close()
            raise AudioError("not an audio file (no audio stream)", path=path)
        stream = streams[0]
        cc = stream.codec_context
        self.samplerate = int(cc.sample_rate or 0)
        self.channels = int(cc.layout.nb_channels or 0) if cc.layout is not None else 0
        if self.channels < 1:
            container.close()
            raise AudioError("audio stream without channels", path=path)
        seconds = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        self.frames = round(seconds * self.samplerate) if seconds and self.samplerate > 0 else None
        self._frames = container.decode(stream)
        self._resampler = None
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._done = False

    def _convert(self, frame: Any) -> list[np.ndarray]:
        if self._resampler is None:
            layout = frame.layout.name if frame.layout is not None else None
            self._resampler = self._av.AudioResampler(format="fltp", layout=layout, rate=self.samplerate)
        out = []
        for f in self._resampler.resample(frame):
            arr = np.asarray(f.to_ndarray(), dtype=np.float32)
            arr = arr.reshape(self.channels, -1) if arr.ndim == 2 and arr.shape[0] == self.channels else arr
            out.append(np.ascontiguousarray(arr.T))
        return out

    def read(self, n: int) -> np.ndarray:
        try:
            while self._pending_n < n and not self._done:
                try:
                    frame = next(self._frames)
                except StopIteration:
                    self._done = True
                    break
                for block in self._convert(frame):
                    self._pending.append(block)
                    self._pending_n += block.shape[0]
        except self._av.FFmpegError as exc:
            raise AudioError(f"decoding failed ({' '.join(str(exc).split())})", path=self.path) from None
        if not self._pending:
            return np.zeros((0, self.channels), np.float32)
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        out, rest = data[:n], data[n:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_n = rest.shape[0]
        return out

    def close(self) -> None:
        self._container.close()


def _open_pyav(p: Path, libsndfile_reason: str) -> AudioReader:
    if not pyav_available():
        if p.suffix.lower() in FFMPEG_EXTENSIONS:
            raise AudioError(f"decoding {p.suffix.lower()} files needs FFmpeg: {FORMATS_HINT}", path=p)
        raise AudioError(
            f"not a decodable audio file (unsupported or corrupt audio; {libsndfile_reason}; "
            f"for AAC/M4A, WMA and other formats: {FORMATS_HINT})",
            path=p,
        )
    import av

    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split()) or "unknown error"
        raise AudioError(
            f"not a decodable audio file (unsupported or corrupt audio; FFmpeg: {reason})", path=p
        ) from None
    return PyAVReader(container, p)


def open_audio(path: object) -> AudioReader:
    """Open an audio file for reading at its native rate (soundfile first, then PyAV when installed).

    Raises a one-line :class:`AudioError` naming the file for every unusable path or
    file, including a header sample rate outside 1 kHz..1 MHz.
    """
    p = check_audio_path(path)
    try:
        with quiet_mpg123():
            reader: AudioReader = SoundfileReader(sf.SoundFile(str(p)), p)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = str(exc).split(":")[-1].strip().rstrip(".") or "unknown format"
        if "does not exist" in reason or "System error" in reason:  # libsndfile's words for "not a format I know"
            reason = "format not recognised"
        reader = _open_pyav(p, f"libsndfile: {reason}")
    try:
        check_sample_rate(reader.samplerate, "sample rate in the file header")
    except EdgeemoError as exc:
        reader.close()
        raise AudioError(str(exc), path=p) from None
    return reader
