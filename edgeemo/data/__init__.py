"""Datasets: every source (DEAM, a CSV manifest, quadrant sets, the built-in corpus) yields a :class:`SongSet`."""

from edgeemo.data.types import DynamicLabels, Song, SongSet

__all__ = ["DynamicLabels", "Song", "SongSet"]
