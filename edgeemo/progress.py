"""Progress bars for long loops: tqdm on stderr when it is installed and asked for, the bare iterable otherwise.

Owns the one way every stage (features, pretraining data, GAN, fit loop) shows progress,
so ``--quiet`` and a missing tqdm (the runtime install has none) behave the same everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_iter(
    items: Iterable[T], enabled: bool, desc: str, unit: str = "it", *, tty_only: bool = True
) -> Iterable[T]:
    """``items`` wrapped in a tqdm bar on stderr (cleared when done) when ``enabled`` and tqdm is importable.

    ``tty_only`` hides the bar when stderr is not a terminal (per-batch bars would flood a log
    file); per-file loops pass False so a background job's log still shows how far it got.
    """
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit=unit, leave=False, file=sys.stderr, disable=None if tty_only else False)
