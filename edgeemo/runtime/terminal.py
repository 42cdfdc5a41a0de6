"""Terminal helpers shared by the live view and the batch progress bar: the terminal's size and width-fitting.

Everything drawn in place (the live panel, a progress line) is cut to the width with
:func:`fit_width`, so no terminal wraps it and a redraw overwrites exactly what it drew.
"""

from __future__ import annotations

import os
import shutil
from typing import IO


def fit_width(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the middle elided with ``…`` (keeps a path's start and file name)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width < 8:
        return text[:width]
    keep = width - 1
    head = keep // 2
    return text[:head] + "…" + text[len(text) - (keep - head) :]


def terminal_size(out: IO[str]) -> tuple[int, int]:
    """(columns, lines) of the terminal behind ``out``; else ``$COLUMNS``/``$LINES`` or 80 x 24."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (AttributeError, OSError, ValueError):  # not a file, or not a terminal
        size = shutil.get_terminal_size((80, 24))
    return max(1, size.columns), max(1, size.lines)
