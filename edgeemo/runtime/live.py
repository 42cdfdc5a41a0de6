"""The live loop: consume a source's queue into a StreamingPredictor and show the mood as it changes.

Owns :func:`run_live` (queue -> predictor -> CSV record / callback / view, stop on
``duration``, end of source or Ctrl-C, then a summary) and the terminal view: on a
TTY a continuously redrawn panel (valence/arousal, an ASCII valence/arousal plane
with a marker, the quadrant word, input level in dBFS, dropped blocks, elapsed
time); otherwise one plain line per new prediction.
"""

from __future__ import annotations

import csv
import math
import queue
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgeemo.errors import EdgeemoError
from edgeemo.mood import MOOD_OF_QUADRANT, mood_name, quadrant_code
from edgeemo.runtime.mic import END
from edgeemo.runtime.stream import PredictionChunk
from edgeemo.runtime.terminal import fit_width, terminal_size

RECORD_FIELDS = ("time_s", "valence", "arousal", "quadrant", "mood")
MIN_WIDTH = 60  # the panel is laid out for terminals at least this wide
_REDRAW_S = 0.1
_STALL_GRACE_S = 5.0  # with --duration: give up this long after the expected end if audio stops arriving


def level_dbfs(block: np.ndarray) -> float:
    """RMS level of a block in dBFS (floor -120)."""
    if block.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
    return max(-120.0, 20.0 * math.log10(rms + 1e-12))


@dataclass
class LiveSummary:
    """What a live session saw."""

    seconds: float = 0.0
    windows: int = 0
    dropped: int = 0
    valence: list[float] = field(default_factory=list)
    arousal: list[float] = field(default_factory=list)
    interrupted: bool = False

    @property
    def mean_valence(self) -> float:
        return float(np.mean(self.valence)) if self.valence else math.nan

    @property
    def mean_arousal(self) -> float:
        return float(np.mean(self.arousal)) if self.arousal else math.nan

    def quadrant_share(self) -> dict[str, float]:
        """Share of windows (= of time: windows are evenly spaced) in each quadrant, keyed ``Q1``..``Q4``."""
        codes = [quadrant_code(v, a) for v, a in zip(self.valence, self.arousal, strict=True)]
        n = max(1, len(codes))
        return {q: codes.count(q) / n for q in MOOD_OF_QUADRANT}

    def text(self) -> str:
        head = f"summary: {self.seconds:.1f} s of audio, {self.windows} window(s), dropped blocks {self.dropped}"
        if not self.windows:
            return head + " (too short for a prediction)"
        mv, ma = self.mean_valence, self.mean_arousal
        share = ", ".join(f"{q} {MOOD_OF_QUADRANT[q]} {p:.0%}" for q, p in self.quadrant_share().items())
        mean_q = f"{quadrant_code(mv, ma)} {mood_name(mv, ma)}"
        return f"{head}\n  mean valence {mv:+.3f}, arousal {ma:+.3f} ({mean_q}); time share: {share}"


# ----------------------------------------------------------------------------- view
def va_plane(
    v: float | None, a: float | None, trail: list[tuple[float, float]] = (), width: int = 33, height: int = 13
):
    """An ASCII valence (x) / arousal (y) plane with quadrant words, a trail (``.``) and a marker (``@``)."""
    grid = [[" "] * width for _ in range(height)]
    cx, cy = width // 2, height // 2
    for x in range(width):
        grid[cy][x] = "-"
    for y in range(height):
        grid[y][cx] = "|"
    grid[cy][cx] = "+"
    for word, (x0, y0) in (
        ("tense", (0, 0)),
        ("happy", (width - 5, 0)),
        ("sad", (0, height - 1)),
        ("calm", (width - 4, height - 1)),
    ):
        for i, ch in enumerate(word):
            grid[y0][x0 + i] = ch

    def cell(vv: float, aa: float) -> tuple[int, int]:
        x = round((min(1.0, max(-1.0, vv)) + 1) / 2 * (width - 1))
        y = round((1 - (min(1.0, max(-1.0, aa)) + 1) / 2) * (height - 1))
        return x, y

    for tv, ta in trail:
        x, y = cell(tv, ta)
        grid[y][x] = "."
    if v is not None and a is not None and math.isfinite(v) and math.isfinite(a):
        x, y = cell(v, a)
        grid[y][x] = "@"
    lines = ["".join(row) for row in grid]
    lines[cy] += " valence"
    return [" " * (cx - 4) + "arousal +", *lines]


class LiveView:
    """Renders the live state: a redrawn panel on a TTY, one line per prediction otherwise.

    The panel is redrawn in place: every line is cut to the terminal's width (less one
    column, so no terminal wraps it), the ASCII plane is left out when the terminal has
    too few lines for it, and a change of size clears what the old layout left behind.
    ``size`` fixes (columns, lines) instead of asking the terminal each redraw.
    """

    def __init__(
        self,
        out: IO[str],
        tty: bool,
        source_name: str,
        sample_rate: int,
        window_s: float = 4.0,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.out, self.tty = out, tty
        self.window_s = window_s
        self.source_name, self.sample_rate = source_name, sample_rate
        self.size = size
        self._lines_drawn = 0
        self._last_size: tuple[int, int] | None = None
        self._last_draw = 0.0
        self.trail: deque[tuple[float, float]] = deque(maxlen=12)
        self.v: float | None = None
        self.a: float | None = None

    def prediction(self, t: float, v: float, a: float, level: float, dropped: int, padded: bool = False) -> None:
        if self.v is not None and self.a is not None:
            self.trail.append((self.v, self.a))
        self.v, self.a = v, a
        if not self.tty:
            extra = " (padded)" if padded else ""
            self.out.write(
                f"{t:8.2f}s  valence {v:+.3f}  arousal {a:+.3f}  {quadrant_code(v, a)} {mood_name(v, a):<5}  "
                f"level {level:6.1f} dBFS  dropped {dropped}{extra}\n"
            )
            self.out.flush()

    def panel(self, elapsed: float, level: float, dropped: int, windows: int, width: int, height: int) -> list[str]:
        """The panel's lines for a terminal of ``width`` x ``height``, each at most ``width - 1`` long."""
        cols = max(1, width - 1)
        mins, secs = divmod(elapsed, 60)
        bar_n = max(10, min(30, cols - 25))
        filled = round(min(1.0, max(0.0, (level + 60.0) / 60.0)) * bar_n)
        if self.v is None or self.a is None:
            mood = f"listening (first prediction after {self.window_s:.1f} s)"
            va = "valence   --     arousal   --"
        else:
            mood = f"{quadrant_code(self.v, self.a)} {mood_name(self.v, self.a).upper()}"
            va = f"valence {self.v:+.3f}   arousal {self.a:+.3f}"
        rate = f" @ {self.sample_rate} Hz"
        title = "edgeemo live  "
        source = fit_width(self.source_name, max(1, cols - len(title) - len(rate)))
        lines = [
            f"{title}{source}{rate}",
            f"elapsed {int(mins):02d}:{secs:04.1f}   windows {windows}   dropped blocks {dropped}",
            f"{va}   mood: {mood}",
            f"level {level:6.1f} dBFS [{'#' * filled}{'.' * (bar_n - filled)}]",
        ]
        plane = va_plane(self.v, self.a, list(self.trail))
        if height - 1 >= len(lines) + len(plane) + 1:
            lines.extend(plane)
        lines.append("Ctrl-C to stop")
        return [fit_width(line, cols) for line in lines[: max(1, height - 1)]]

    def redraw(self, elapsed: float, level: float, dropped: int, windows: int, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < _REDRAW_S:
            return
        self._last_draw = now
        size = self.size or terminal_size(self.out)
        lines = self.panel(elapsed, level, dropped, windows, *size)
        buf = []
        if self._lines_drawn:
            buf.append(f"\x1b[{self._lines_drawn}F")
            if size != self._last_size:
                buf.append("\x1b[J")  # the old layout's leftovers (a resize may have wrapped them)
        else:
            buf.append("\x1b[?25l")
        buf.extend(f"{line}\x1b[K\n" for line in lines)
        self.out.write("".join(buf))
        self.out.flush()
        self._lines_drawn = len(lines)
        self._last_size = size

    def close(self) -> None:
        if self.tty and self._lines_drawn:
            self.out.write("\x1b[?25h")
            self.out.flush()


# ----------------------------------------------------------------------------- loop
def run_live(
    model: Any,
    source: Any,
    *,
    smoothing: float = 0.0,
    duration: float | None = None,
    record: str | Path | None = None,
    out: IO[str] | None = None,
    tty: bool | None = None,
    on_window: Callable[[float, float, float], None] | None = None,
) -> LiveSummary:
    """Run ``source`` (a :mod:`edgeemo.runtime.mic` source) through ``model`` until it ends,
    ``duration`` seconds of audio were consumed, or Ctrl-C; returns (and prints) a summary.

    ``record`` writes ``time_s,valence,arousal,quadrant,mood`` rows (window centre times from
    the start of the stream); ``on_window(t, v, a)`` is called for every new window.
    """
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    if duration is not None and not duration > 0:
        raise EdgeemoError(f"duration must be positive, got {duration}")
    predictor = model.stream(source.sample_rate, smoothing=smoothing)
    limit = None if duration is None else round(duration * source.sample_rate)
    view = LiveView(out, tty, source.name, source.sample_rate, model.feature_config.window_seconds)
    summary = LiveSummary()
    consumed = 0
    level = -120.0
    record_file = None
    writer = None
    if record is not None:
        try:
            record_file = open(record, "w", newline="")  # noqa: SIM115 - closed in finally
        except OSError as exc:
            raise EdgeemoError(f"cannot write {record} ({exc.strerror})") from None
        writer = csv.writer(record_file)
        writer.writerow(RECORD_FIELDS)

    def handle(chunk: PredictionChunk) -> None:
        for t, v, a in chunk:
            summary.windows += 1
            summary.valence.append(v)
            summary.arousal.append(a)
            if writer is not None and record_file is not None:
                writer.writerow([f"{t:.3f}", f"{v:.6f}", f"{a:.6f}", quadrant_code(v, a), mood_name(v, a)])
                record_file.flush()
            if on_window is not None:
                on_window(t, v, a)
            view.prediction(t, v, a, level, source.dropped, chunk.padded)

    t0 = time.monotonic()
    source.start()
    try:
        while True:
            view.redraw(consumed / source.sample_rate, level, source.dropped, summary.windows)
            try:
                block = source.queue.get(timeout=0.05)
            except queue.Empty:
                if duration is not None and time.monotonic() - t0 > duration + _STALL_GRACE_S:
                    break  # the source stopped delivering: end rather than hang
                continue
            if block is END:
                if getattr(source, "error", None) is not None:
                    raise source.error
                break
            if limit is not None and consumed + block.shape[0] >= limit:
                block = block[: limit - consumed]
            consumed += block.shape[0]
            level = level_dbfs(block)
            handle(predictor.push(block))
            if limit is not None and consumed >= limit:
                break
        handle(predictor.flush())
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        source.stop()
        if record_file is not None:
            record_file.close()
        summary.seconds = consumed / source.sample_rate
        summary.dropped = source.dropped
        view.redraw(summary.seconds, level, source.dropped, summary.windows, force=True)
        view.close()
    out.write(summary.text() + "\n")
    out.flush()
    return summary
