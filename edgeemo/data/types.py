"""The records every dataset loader produces: :class:`Song`, :class:`DynamicLabels`, :class:`SongSet`.

Labels are always stored in [-1, 1] (loaders convert from their native scale). A song
is one audio file (or a ``[start_s, end_s)`` excerpt of one) with a song-level target
and, when the dataset has them, time-varying labels. ``group`` is the unit a split
keeps together (the artist when known, else the song id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeemo.errors import DataError


def scale_to_unit(values: np.ndarray | float, low: float, high: float) -> np.ndarray:
    """Map labels from ``[low, high]`` linearly onto [-1, 1] (DEAM 1..9: ``(x - 5) / 4``)."""
    if not high > low:
        raise DataError(f"label scale needs low < high, got {low}..{high}")
    mid, half = (high + low) / 2.0, (high - low) / 2.0
    return (np.asarray(values, dtype=np.float64) - mid) / half


@dataclass(frozen=True)
class DynamicLabels:
    """Time-varying labels: ``times`` in seconds from the start of the file, values in [-1, 1]."""

    times: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.times)
        if len(self.valence) != n or len(self.arousal) != n:
            raise DataError("dynamic labels: times, valence and arousal differ in length")

    def mean_between(self, start_s: float, end_s: float) -> tuple[float, float] | None:
        """Mean (valence, arousal) of the annotations inside ``[start_s, end_s)``, or None if none fall there."""
        mask = (self.times >= start_s) & (self.times < end_s)
        if not mask.any():
            return None
        return float(self.valence[mask].mean()), float(self.arousal[mask].mean())


@dataclass(frozen=True)
class Song:
    """One labelled audio file (or excerpt)."""

    id: str
    path: Path
    valence: float
    arousal: float
    group: str = ""
    start_s: float = 0.0
    end_s: float | None = None
    dynamic: DynamicLabels | None = None
    quadrant: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("valence", "arousal"):
            v = getattr(self, name)
            if not np.isfinite(v) or not -1.0 - 1e-6 <= v <= 1.0 + 1e-6:
                raise DataError(f"song {self.id}: {name} {v} is outside [-1, 1] (or NaN)")
        if not self.group:
            object.__setattr__(self, "group", self.id)


@dataclass
class SongSet:
    """A named list of songs plus a human description (goes into model cards)."""

    name: str
    songs: list[Song]
    description: str = ""
    skipped: list[str] = field(default_factory=list)  # one line per song that was left out, with the reason

    def __len__(self) -> int:
        return len(self.songs)

    def __add__(self, other: SongSet) -> SongSet:
        return SongSet(
            name=f"{self.name}+{other.name}",
            songs=self.songs + other.songs,
            description=f"{self.description}; {other.description}".strip("; "),
            skipped=self.skipped + other.skipped,
        )

    def digest(self) -> str:
        """sha256 (16 hex) of what the songs are: each one's id, labels, excerpt and audio content (not paths)."""
        from edgeemo.filehash import content_digest

        rows = sorted(
            f"{s.id}|{s.valence!r}|{s.arousal!r}|{s.start_s!r}|{s.end_s!r}|{content_digest(s.path)}" for s in self.songs
        )
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]

    def targets(self) -> np.ndarray:
        """Song-level targets, ``(n, 2)`` = (valence, arousal)."""
        return np.array([[s.valence, s.arousal] for s in self.songs], dtype=np.float32).reshape(-1, 2)
