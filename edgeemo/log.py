"""The one logging path of edgeemo: progress and stage messages go to stderr through stdlib ``logging``.

Messages are logged on the ``edgeemo`` logger at INFO; the handler installed here writes
them to whatever ``sys.stderr`` is at the time (so captured or redirected stderr gets them),
and an application can reconfigure or silence the logger as usual.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("edgeemo")


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler bound to the current ``sys.stderr``, not the one at import time."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it once; the property ignores that
        pass


if not logger.handlers:
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def log(msg: str) -> None:
    """Log one progress/stage message (stderr by default)."""
    logger.info(msg)
