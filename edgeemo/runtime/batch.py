"""Batch prediction: many inputs (files, folders, glob patterns, audio on stdin) through one model.

Owns what ``edgeemo predict`` does between its arguments and its output: expanding the
inputs into files (folders recursively, keeping the extensions the decoders read),
reading ``-`` (audio bytes on stdin) into a temporary file, where per-file JSON sidecars
go, and the progress line on stderr (the output formats are :mod:`edgeemo.runtime.output`). A file
that cannot be read is reported by the caller and skipped; the batch goes on.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgeemo.errors import AudioError, EdgeemoError
from edgeemo.runtime.decoders import audio_extensions
from edgeemo.runtime.terminal import fit_width, terminal_size

STDIN = "-"
SIDECAR_SUFFIX = ".edgeemo.json"
MAX_STDIN_BYTES = 2 << 30  # 2 GiB: over three hours of 44.1 kHz stereo 16-bit WAV
PROGRESS_MIN_FILES = 4  # fewer files finish before a bar would be worth drawing
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class BatchInput:
    """One thing to predict: ``name`` as shown and written (``-`` for stdin), ``path`` (None for stdin)
    and ``root``, the folder it was found under (its parent when given by name)."""

    name: str
    path: Path | None
    root: Path | None


def _folder_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions
        )
    return found


def expand_inputs(
    specs: Sequence[str], extensions: tuple[str, ...] | None = None
) -> tuple[list[BatchInput], list[str]]:
    """Files, folders (recursive), glob patterns and ``-`` -> (inputs in order, without repeats; problems).

    A folder contributes its files with a decodable extension (hidden ones left out), a
    pattern its matches (``**`` recurses); a named file is kept whatever its extension
    (the decoder then says what is wrong with it). ``problems`` holds one line per
    argument that yields nothing (an empty folder, a pattern without a match).
    """
    extensions = tuple(e.lower() for e in (extensions or audio_extensions()))
    items: list[BatchInput] = []
    seen: set[str] = set()
    problems: list[str] = []

    def add(path: Path | None, root: Path | None, name: str) -> None:
        key = name if path is None else os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            items.append(BatchInput(name, path, root))

    def add_folder(folder: Path) -> int:
        files = _folder_files(folder, extensions)
        for f in files:
            add(f, folder, str(f))
        return len(files)

    for spec in specs:
        if spec == STDIN:
            add(None, None, STDIN)
            continue
        path = Path(spec)
        if path.is_dir():
            if not add_folder(path):
                problems.append(f"{spec}: no audio files in this folder (looked for {', '.join(extensions)})")
        elif os.path.lexists(spec) or not (_GLOB_CHARS & set(spec)):
            add(path, path.parent, spec)  # a file, or a missing name the decoder reports
        else:
            matches = sorted(glob.glob(spec, recursive=True))
            n = 0
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    n += add_folder(mp)
                else:
                    add(mp, mp.parent, m)
                    n += 1
            if not n:
                problems.append(f"{spec}: no file matches this pattern")
    return items, problems


def sidecar_path(item: BatchInput, out_dir: Path | None) -> Path:
    """Where ``item``'s JSON sidecar goes: next to the file, or under ``out_dir`` in the layout below its folder."""
    if item.path is None:
        if out_dir is None:
            raise EdgeemoError("--sidecar for '-' (stdin) needs --out-dir: there is no file to put it next to")
        return out_dir / f"stdin{SIDECAR_SUFFIX}"
    if out_dir is None:
        return item.path.with_name(item.path.name + SIDECAR_SUFFIX)
    rel = item.path.relative_to(item.root) if item.root is not None else Path(item.path.name)
    return out_dir / rel.with_name(rel.name + SIDECAR_SUFFIX)


def sidecar_paths(items: Sequence[BatchInput], out_dir: Path | None) -> list[Path]:
    """Every item's sidecar path; a one-line error when two inputs would write the same one."""
    paths = [sidecar_path(i, out_dir) for i in items]
    owner: dict[str, str] = {}
    for item, p in zip(items, paths, strict=True):
        key = os.path.normpath(os.path.abspath(p))
        if key in owner:
            raise EdgeemoError(f"--sidecar: {owner[key]} and {item.name} would both write {p}")
        owner[key] = item.name
    return paths


@contextmanager
def stdin_audio(stream: IO[bytes], limit: int = MAX_STDIN_BYTES) -> Iterator[Path]:
    """Audio bytes from ``stream`` in a temporary file (removed afterwards) that the decoders can seek in.

    One-line :class:`AudioError` for a terminal on stdin, no bytes, or more than ``limit`` bytes.
    """
    try:
        if stream.isatty():
            raise AudioError(
                "'-' reads audio bytes from standard input, which is a terminal: "
                "pipe a file in (edgeemo predict - < song.mp3)"
            )
    except (AttributeError, ValueError):
        pass
    fd, tmp = tempfile.mkstemp(prefix="edgeemo-stdin-")
    try:
        total = 0
        with os.fdopen(fd, "wb") as f:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise AudioError(f"more than {limit >> 20} MiB of audio on standard input", path=STDIN)
                f.write(chunk)
        if total == 0:
            raise AudioError("no audio bytes on standard input", path=STDIN)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def predict_input(model: Any, item: BatchInput, stdin: IO[bytes] | None, smoothing: float) -> Any:
    """Predict one input; ``-`` reads ``stdin``. Errors name the input as the user gave it."""
    if item.path is not None:
        return model.predict_file(item.path, smoothing=smoothing)
    if stdin is None:
        raise AudioError("standard input is not available", path=STDIN)
    with stdin_audio(stdin) as tmp:
        try:
            pred = model.predict_file(tmp, smoothing=smoothing)
        except AudioError as exc:
            raise AudioError(str(exc).replace(str(tmp), STDIN)) from None
    pred.path = STDIN
    return pred


class Progress:
    """A one-line progress bar on ``stream`` (drawn in place, cut to the terminal width, erased at the end).

    ``enabled=None`` draws it only for :data:`PROGRESS_MIN_FILES` files or more and when
    ``stream`` is a terminal. :meth:`clear` makes room for a message.
    """

    def __init__(self, total: int, stream: IO[str], enabled: bool | None = None) -> None:
        if enabled is None:
            try:
                enabled = total >= PROGRESS_MIN_FILES and stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.total, self.stream, self.enabled = total, stream, bool(enabled)
        self.done = 0
        self.t0 = time.monotonic()
        self._drawn = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone: progress is not worth failing for
            self.enabled = False

    def show(self, name: str) -> None:
        """Draw the bar with ``name`` as the file now being read."""
        if not self.enabled:
            return
        cols = terminal_size(self.stream)[0] - 1
        frac = self.done / self.total if self.total else 1.0
        elapsed = time.monotonic() - self.t0
        eta = f"  eta {_clock(elapsed / self.done * (self.total - self.done))}" if self.done else ""
        bar_n = 20
        bar = "#" * round(frac * bar_n) + "." * (bar_n - round(frac * bar_n))
        head = f"[{bar}] {self.done}/{self.total} files  {_clock(elapsed)}{eta}  "
        self._write("\r" + fit_width(head + name, cols) + "\x1b[K")
        self._drawn = True

    def advance(self) -> None:
        self.done += 1

    def clear(self) -> None:
        if self.enabled and self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"
