"""The data every training stage of a run shares: which songs, how they are split, their windows.

Owns resolving a run's data sources (built-in corpus, DEAM, manifests, quadrant sets,
mixed), the seeded song split, saving that split to ``runs/<name>/split.json`` so
every stage and ``edgeemo evaluate`` use the same songs, and building the windows
(cached features).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.atomic import atomic_write_json
from edgeemo.config import DataConfig, DataSource
from edgeemo.data.split import SPLITS, split_songs
from edgeemo.data.types import Song, SongSet
from edgeemo.data.windows import WindowSet, build_windows, default_cache_dir
from edgeemo.errors import DataError
from edgeemo.log import log


def load_source(source: DataSource, cfg: DataConfig, cache_dir: Path | None = None) -> SongSet:
    """Load one data source into a SongSet."""
    if source.kind == "builtin":
        from edgeemo.data.synth import builtin_corpus

        return builtin_corpus(
            n=cfg.corpus_n,
            seed=cfg.corpus_seed,
            duration_s=cfg.corpus_duration,
            sample_rate=cfg.features.sample_rate,
            cache_dir=cache_dir,
        )
    if source.path is None:
        raise DataError(f"data source {source.kind} needs a path")
    from edgeemo.data.check import load_dataset

    opts: dict[str, Any] = {}
    if source.kind == "quadrants":
        opts = {"magnitude": cfg.quadrant_magnitude, "use_confidence": cfg.quadrant_confidence}
    return load_dataset(source.resolved(), kind=source.kind, **opts)


def merge_songsets(sets: list[SongSet]) -> SongSet:
    """The sources of a run in one SongSet (each dataset is still split on its own, by ``split_songs``)."""
    out = sets[0]
    for s in sets[1:]:
        out = out + s
    return out


@dataclass
class RunData:
    """Songs per split and their windows (built lazily; cached on disk)."""

    parts: list[SongSet]
    splits: dict[str, list[Song]]
    cfg: DataConfig
    cache_dir: Path
    excluded: list[Song] = field(default_factory=list)  # songs of ``cfg.exclude``: in no split, never trained on
    built: dict[str, WindowSet] = field(default_factory=dict)

    def windows(self, split: str, progress: bool = True) -> WindowSet:
        if split not in self.built:
            self.built[split] = build_windows(
                self.splits[split], self.cfg.features, self.cache_dir, progress=progress, desc=f"features/{split}"
            )
        return self.built[split]

    @property
    def songset(self) -> SongSet:
        return merge_songsets(self.parts)

    def describe(self) -> dict[str, Any]:
        """Dataset names, descriptions, song counts and content digests (for summaries and model cards)."""
        songset = self.songset
        return {
            "dataset": songset.name,
            "description": songset.description,
            "songs": {k: len(v) for k, v in self.splits.items()},
            "skipped": len(songset.skipped),
            **({"excluded": len(self.excluded)} if self.excluded else {}),
            "sources": [
                {**src.to_dict(), "name": part.name, "songs": len(part), "digest": part.digest()}
                for src, part in zip(self.cfg.sources, self.parts, strict=True)
            ],
        }


def split_file(run_dir: Path) -> Path:
    return Path(run_dir) / "split.json"


def leave_out(parts: list[SongSet], ids: tuple[str, ...]) -> tuple[list[SongSet], list[Song]]:
    """``parts`` without the songs whose id is in ``ids``, and those songs; an id no source has is an error."""
    if not ids:
        return parts, []
    wanted = set(ids)
    kept = [dataclasses.replace(p, songs=[s for s in p.songs if s.id not in wanted]) for p in parts]
    out = [s for p in parts for s in p.songs if s.id in wanted]
    unknown = wanted - {s.id for s in out}
    if unknown:
        raise DataError(f"data.exclude names {len(unknown)} song id(s) no source has (e.g. {sorted(unknown)[0]})")
    return kept, out


def prepare_run_data(run_dir: Path, cfg: DataConfig, cache_dir: Path | None = None) -> RunData:
    """Load the sources, leave out ``cfg.exclude`` and split the rest; the split is written once to
    ``split.json`` and reused after."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    parts, excluded = leave_out([load_source(s, cfg, cache_dir) for s in cfg.sources], cfg.exclude)
    songset = merge_songsets(parts)
    for line in songset.skipped[:5]:
        log(f"skipped: {line}")
    if len(songset.skipped) > 5:
        log(f"skipped: ... and {len(songset.skipped) - 5} more")
    path = split_file(run_dir)
    by_id = {s.id: s for s in songset.songs}
    if path.is_file():
        saved = json.loads(path.read_text())
        missing = [i for k in SPLITS for i in saved[k] if i not in by_id]
        if missing:
            raise DataError(
                f"{path} names {len(missing)} song(s) the data no longer has (e.g. {missing[0]}); "
                "use a new run name or --restart"
            )
        splits = {k: [by_id[i] for i in saved[k]] for k in SPLITS}
    else:
        splits = split_songs(songset, cfg.split_fractions, cfg.split_seed)
        atomic_write_json(path, {k: [s.id for s in v] for k, v in splits.items()})
    return RunData(parts=parts, splits=splits, cfg=cfg, cache_dir=cache_dir, excluded=excluded)


def epoch_window_indices(windows: WindowSet, per_song: int | None, seed: int, epoch: int) -> np.ndarray:
    """A fresh random choice of at most ``per_song`` windows per song for one epoch (deterministic)."""
    return epoch_group_indices(windows.index[:, 0], per_song, seed, epoch)


def epoch_group_indices(group: np.ndarray, per_group: int | None, seed: int, epoch: int) -> np.ndarray:
    """Sorted indices into ``group`` (one group id per window, e.g. its song): a fresh random choice of at most
    ``per_group`` windows of each group for one epoch (deterministic in ``seed`` and ``epoch``)."""
    if per_group is None:
        return np.arange(len(group))
    rng = np.random.default_rng([seed, epoch])
    ids = np.asarray(group)
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    keep = []
    for rows in np.split(order, bounds):
        keep.append(rows if rows.size <= per_group else rng.choice(rows, per_group, replace=False))
    return np.sort(np.concatenate(keep))
