"""The one exception type edgeemo raises for bad input, with one-line messages.

Every user-facing failure (bad audio, a missing annotation, a tampered bundle, a
NaN loss) is an :class:`EdgeemoError` whose ``str()`` is a single line naming the
thing at fault and the problem. The CLI turns it into ``error: <message>`` and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class EdgeemoError(Exception):
    """A user-facing error with a one-line message."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        one_line = " ".join(str(message).split())
        if path is not None:  # a file name may hold line breaks: shown escaped, so the message stays one line
            shown = str(path).replace("\r", "\\r").replace("\n", "\\n")
            one_line = f"{shown}: {one_line}"
        super().__init__(one_line)
        self.path = None if path is None else str(path)


class AudioError(EdgeemoError):
    """Audio that cannot be decoded or is unusable (missing, corrupt, empty, silent, NaN)."""


class DataError(EdgeemoError):
    """A dataset or annotation problem (missing columns, labels out of range, too few songs)."""


class BundleError(EdgeemoError):
    """A model bundle that is missing, tampered with, or from an unsupported schema."""


class TrainingError(EdgeemoError):
    """A training run that cannot continue (NaN loss, incompatible checkpoint)."""
