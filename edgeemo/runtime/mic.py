"""Live audio sources: an input device (sounddevice/PortAudio), a file played in real time, an array.

Every source has the same shape: ``start()`` begins delivering ``(frames, channels)``
float32 blocks at ``sample_rate`` into a bounded ``queue`` (``END`` after the last
block), ``stop()`` ends it, and ``dropped`` counts blocks lost because the queue was
full. The device callback does nothing but copy into the queue, so a slow consumer
costs dropped blocks, never audio-thread stalls. sounddevice is imported only here,
lazily, with one-line errors when it or PortAudio is missing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.errors import AudioError, EdgeemoError
from edgeemo.runtime.limits import check_sample_rate

END = None  # queue sentinel: the source has finished
DEFAULT_BLOCK_S = 0.05
DEFAULT_QUEUE_BLOCKS = 200  # 10 s of audio at the default block size


def import_sounddevice() -> Any:
    """``sounddevice``, or an :class:`EdgeemoError` saying what to install."""
    try:
        import sounddevice as sd
    except ModuleNotFoundError:
        raise EdgeemoError("live input needs sounddevice: pip install 'edgeemo[live]'") from None
    except OSError as exc:
        raise EdgeemoError(
            f"PortAudio is not installed ({exc}): on Debian/Ubuntu apt-get install libportaudio2 "
            "(and libasound2-plugins for PulseAudio/PipeWire devices)"
        ) from None
    return sd


def input_devices() -> list[dict[str, Any]]:
    """Input-capable devices: ``index``, ``name``, ``channels``, ``samplerate``, ``hostapi``."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except Exception as exc:  # PortAudio failing to enumerate
        raise EdgeemoError(f"cannot list audio devices ({' '.join(str(exc).split())})") from None
    return [
        {
            "index": int(d["index"]),
            "name": str(d["name"]),
            "channels": int(d["max_input_channels"]),
            "samplerate": float(d["default_samplerate"]),
            "hostapi": str(apis[d["hostapi"]]["name"]) if 0 <= d["hostapi"] < len(apis) else "?",
        }
        for d in devices
        if d["max_input_channels"] > 0
    ]


def format_devices(devices: list[dict[str, Any]]) -> str:
    """One line: ``0 'pulse' (32 ch, 44100 Hz), ...``."""
    if not devices:
        return "none"
    return ", ".join(f"{d['index']} {d['name']!r} ({d['channels']} ch, {d['samplerate']:g} Hz)" for d in devices)


def default_input_index(sd: Any) -> int | None:
    """Index of PortAudio's default input device, or None when there is none.

    ``sd.default.device`` is an (input, output) pair object (not a tuple), a single
    index, or a device name; PortAudio reports "no default" as -1.
    """
    dev = sd.default.device
    try:
        value = dev if isinstance(dev, (int, str)) or dev is None else dev[0]
    except (TypeError, IndexError, KeyError):
        return None
    if isinstance(value, str):
        try:
            return int(sd.query_devices(value, kind="input")["index"])
        except Exception:  # an unknown or output-only name: no usable default
            return None
    if value is None or isinstance(value, bool):
        return None
    try:
        index = int(value)
    except (TypeError, ValueError):
        return None
    return index if index >= 0 else None


def devices_table(devices: list[dict[str, Any]]) -> str:
    """Multi-line listing for ``edgeemo live --list-devices``, the default input starred."""
    if not devices:
        return "no audio input devices found"
    default = default_input_index(import_sounddevice())
    lines = [f"{'':2}{'index':>5}  {'name':<40}{'ch':>4}{'rate':>9}  host API"]
    for d in devices:
        mark = "*" if d["index"] == default else " "
        lines.append(
            f"{mark:2}{d['index']:>5}  {d['name'][:40]:<40}{d['channels']:>4}{d['samplerate']:>9.0f}  {d['hostapi']}"
        )
    lines.append("(* = default input)" if any(d["index"] == default for d in devices) else "(no default input device)")
    return "\n".join(lines)


def resolve_device(spec: str | int | None) -> dict[str, Any]:
    """The input device for ``--device`` (an index, an exact name or a unique name fragment; None = default)."""
    devices = input_devices()
    if not devices:
        raise EdgeemoError("no audio input devices found (is a sound card or sound server available?)")
    listing = format_devices(devices)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        default = default_input_index(import_sounddevice())
        match = [d for d in devices if d["index"] == default]
        if not match:
            raise EdgeemoError(f"no default input device; pick one with --device: {listing}")
        return match[0]
    if isinstance(spec, int) or str(spec).strip().isdigit():
        idx = int(spec)
        match = [d for d in devices if d["index"] == idx]
        if not match:
            raise EdgeemoError(f"no input device with index {idx}; available input devices: {listing}")
        return match[0]
    name = str(spec).strip()
    exact = [d for d in devices if d["name"] == name]
    if exact:
        return exact[0]
    fragment = [d for d in devices if name.lower() in d["name"].lower()]
    if len(fragment) == 1:
        return fragment[0]
    if not fragment:
        raise EdgeemoError(f"no input device matches {name!r}; available input devices: {listing}")
    raise EdgeemoError(f"{name!r} matches several input devices ({format_devices(fragment)}); use an index")


class _QueueSource:
    """Shared queue plumbing: bounded queue, drop counting, END sentinel."""

    name = "source"
    sample_rate: int
    channels: int

    def __init__(self, max_queue: int) -> None:
        self.queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max(2, int(max_queue)))
        self.dropped = 0
        self.error: BaseException | None = None

    def _offer(self, block: np.ndarray) -> None:
        try:
            self.queue.put_nowait(block)
        except queue.Full:
            self.dropped += 1

    def _end(self, wait: threading.Event | None = None) -> None:
        """Queue the END sentinel.

        With ``wait`` (a lossless source's stop event) it waits for room until that event
        is set; otherwise, or once stopped, it makes room by dropping the oldest block.
        """
        while wait is not None and not wait.is_set():
            try:
                self.queue.put(END, timeout=0.1)
                return
            except queue.Full:
                continue
        while True:
            try:
                self.queue.put_nowait(END)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class MicSource(_QueueSource):
    """An input device via sounddevice, opened at its native rate (or ``samplerate``), mono."""

    def __init__(
        self,
        device: str | int | None = None,
        samplerate: int | None = None,
        *,
        block_s: float = DEFAULT_BLOCK_S,
        max_queue: int = DEFAULT_QUEUE_BLOCKS,
    ) -> None:
        super().__init__(max_queue)
        self._sd = import_sounddevice()
        self.device = resolve_device(device)
        self.name = f"{self.device['name']} (device {self.device['index']})"
        self.sample_rate = check_sample_rate(
            samplerate if samplerate is not None else round(self.device["samplerate"]),
            f"sample rate of input device {self.name}",
        )
        self.channels = 1
        self.block_s = block_s
        self.overflows = 0
        self._stream: Any = None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        self._offer(indata.copy())  # the audio thread only copies; all work happens in the consumer

    def start(self) -> None:
        sd = self._sd
        errors = []
        for channels in dict.fromkeys((1, min(2, self.device["channels"]))):
            try:
                self._stream = sd.InputStream(
                    device=self.device["index"],
                    channels=channels,
                    samplerate=self.sample_rate,
                    dtype="float32",
                    blocksize=max(1, round(self.sample_rate * self.block_s)),
                    callback=self._callback,
                )
                self.channels = channels
                break
            except Exception as exc:  # sd.PortAudioError, ValueError for unsupported settings
                errors.append(" ".join(str(exc).split()))
        if self._stream is None:
            raise EdgeemoError(
                f"cannot open input device {self.name} at {self.sample_rate} Hz ({errors[-1]}); "
                f"available input devices: {format_devices(input_devices())}"
            )
        try:
            self._stream.start()
        except Exception as exc:
            raise EdgeemoError(f"cannot start input device {self.name} ({' '.join(str(exc).split())})") from None

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # already closed or device gone: nothing left to release
                pass
        self._end()


class _ThreadSource(_QueueSource):
    """Feeds blocks from an iterator on a thread, paced by the wall clock when ``realtime``.

    Real-time sources drop blocks when the queue is full (like a device); non-real-time
    ones wait for room (nothing is lost, for tests and batch use).
    """

    def __init__(self, sample_rate: int, channels: int, realtime: bool, block_s: float, max_queue: int) -> None:
        super().__init__(max_queue)
        self.sample_rate = check_sample_rate(sample_rate)
        self.channels = channels
        self.realtime = realtime
        self.block = max(1, round(self.sample_rate * block_s))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _blocks(self) -> Iterator[np.ndarray]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _run(self) -> None:
        t0 = time.monotonic()
        sent = 0
        try:
            for block in self._blocks():
                if self._stop.is_set():
                    break
                if self.realtime:
                    delay = t0 + sent / self.sample_rate - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    self._offer(block)
                else:
                    while not self._stop.is_set():
                        try:
                            self.queue.put(block, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                sent += block.shape[0]
            if self.realtime and not self._stop.is_set():  # the last block "plays" before the end
                self._stop.wait(max(0.0, t0 + sent / self.sample_rate - time.monotonic()))
        except BaseException as exc:  # reported to the consumer through .error
            self.error = exc
        finally:
            self._end(wait=None if self.realtime else self._stop)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"edgeemo-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class ArraySource(_ThreadSource):
    """A numpy signal (``(n,)`` or ``(n, channels)``) fed through the queue in ``block_s`` blocks."""

    def __init__(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        realtime: bool = False,
        block_s: float = DEFAULT_BLOCK_S,
        max_queue: int = DEFAULT_QUEUE_BLOCKS,
        name: str = "array",
    ) -> None:
        data = np.asarray(samples, dtype=np.float32)
        data = data[:, None] if data.ndim == 1 else data
        if data.ndim != 2:
            raise AudioError(f"expected (samples,) or (samples, channels), got {np.shape(samples)}")
        super().__init__(sample_rate, data.shape[1], realtime, block_s, max_queue)
        self._data = data
        self.name = name

    def _blocks(self) -> Iterator[np.ndarray]:
        for s in range(0, self._data.shape[0], self.block):
            yield self._data[s : s + self.block].copy()


class FileSource(_ThreadSource):
    """An audio file decoded block by block at its native rate and played into the queue in real time."""

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = True,
        block_s: float = DEFAULT_BLOCK_S,
        max_queue: int = DEFAULT_QUEUE_BLOCKS,
    ) -> None:
        from edgeemo.runtime.audio import audio_info

        sr, _, channels = audio_info(path)  # AudioError for missing / corrupt / empty files
        super().__init__(sr, channels, realtime, block_s, max_queue)
        self.path = Path(path)
        self.name = str(path)

    def _blocks(self) -> Iterator[np.ndarray]:
        from edgeemo.runtime.decoders import open_audio

        with open_audio(self.path) as f:  # AudioError for decoding failures, reported through .error
            while True:
                data = f.read(self.block)
                if data.shape[0] == 0:
                    return
                yield data
