"""Seeded train/val/test split of songs by group (artist or song), never by window.

Numpy only. All songs of one group land in the same split, so no artist (or song)
leaks windows across splits. A mix of datasets (``Song.source``) is split one dataset
at a time with the same fractions and seed, so adding a dataset to a run never moves
another dataset's songs between splits (its test figures stay comparable); a dataset
with fewer than 3 groups goes to train whole.
"""

from __future__ import annotations

import numpy as np

from edgeemo.data.types import Song, SongSet
from edgeemo.errors import DataError

SPLITS = ("train", "val", "test")


def split_songs(
    songset: SongSet, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[Song]]:
    """Split songs into ``train``/``val``/``test`` by group with the given song fractions, per source dataset."""
    sources: dict[str, list[Song]] = {}
    for song in songset.songs:
        sources.setdefault(song.source, []).append(song)
    if len(sources) <= 1:
        return _split_one(songset, fractions, seed)
    out: dict[str, list[Song]] = {k: [] for k in SPLITS}
    for name, songs in sources.items():
        part = SongSet(name=f"{songset.name}[{name or 'unnamed'}]", songs=songs)
        if len({s.group for s in songs}) < 3:
            out["train"].extend(songs)
            continue
        for k, v in _split_one(part, fractions, seed).items():
            out[k].extend(v)
    for k in ("val", "test"):
        if not out[k]:
            raise DataError(f"dataset {songset.name!r}: no source has enough groups (3+) to fill the {k} split")
    return out


def _split_one(songset: SongSet, fractions: tuple[float, float, float], seed: int) -> dict[str, list[Song]]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise DataError(f"split fractions must be three positive numbers, got {fractions}")
    total = float(sum(fractions))
    fractions = tuple(f / total for f in fractions)
    groups: dict[str, list[Song]] = {}
    for song in songset.songs:
        groups.setdefault(song.group, []).append(song)
    if len(groups) < 3:
        raise DataError(
            f"dataset {songset.name!r} has {len(songset.songs)} songs in {len(groups)} group(s); "
            "a train/val/test split needs at least 3 (and realistically dozens)"
        )
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    n_songs = len(songset.songs)
    targets = [fractions[1] * n_songs, fractions[2] * n_songs]  # val, test quotas; the rest is train
    out: dict[str, list[Song]] = {k: [] for k in SPLITS}
    for rank, gi in enumerate(order):
        group = groups[names[gi]]
        # first two groups seed val and test so neither is ever empty; then fill quotas, rest to train
        if rank == 0:
            dest = "val"
        elif rank == 1:
            dest = "test"
        elif len(out["val"]) + len(group) <= targets[0]:
            dest = "val"
        elif len(out["test"]) + len(group) <= targets[1]:
            dest = "test"
        else:
            dest = "train"
        out[dest].extend(group)
    if not out["train"]:
        raise DataError(f"dataset {songset.name!r} is too small to leave any training songs after the split")
    return out
