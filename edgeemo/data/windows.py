"""Mel windows with targets, built from songs, with an on-disk feature cache.

Owns the step from :class:`Song` records to model inputs: decode each song once,
compute its log-mel frames with :mod:`edgeemo.features` (the same code the runtime
runs), cache them on disk keyed by the FeatureConfig hash and the file's identity,
and index ``(song, window)`` pairs. A window's target is the mean of the song's
dynamic annotations inside the window when it has them, else the song-level label.

:class:`WindowSet` is numpy only (bundles are evaluated without torch); the training
stages wrap it as a torch dataset (:mod:`edgeemo.train.datasets`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeemo.atomic import DAMAGED_ENTRY_ERRORS
from edgeemo.config import default_cache_root
from edgeemo.data.types import Song
from edgeemo.errors import AudioError, DataError
from edgeemo.features import FeatureConfig, log_mel, pad_to_window
from edgeemo.filehash import cache_key, content_digest
from edgeemo.progress import progress_iter
from edgeemo.runtime.audio import load_audio


def default_cache_dir() -> Path:
    """``$EDGEEMO_CACHE`` or ``~/.cache/edgeemo`` (:func:`edgeemo.config.default_cache_root`, the named root)."""
    return default_cache_root()


def _song_key(song: Song) -> str:
    """The cache key of a song's features: its file's content and the excerpt (not path or mtime)."""
    ident = f"{content_digest(song.path)}|{song.start_s}|{song.end_s}"
    return cache_key(ident)


def song_frames(song: Song, cfg: FeatureConfig, cache_dir: Path | None = None) -> np.ndarray:
    """Log-mel frames ``(n_mels, T)`` of one song (padded to at least one window), float16-rounded, cached."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "features" / cfg.digest() / f"{_song_key(song)}.npy"
        if path.is_file():
            try:
                return np.load(path).astype(np.float32)
            except DAMAGED_ENTRY_ERRORS:
                pass  # a damaged cache entry is recomputed
    signal = load_audio(song.path, cfg.sample_rate, start_s=song.start_s, end_s=song.end_s)
    signal, _ = pad_to_window(signal, cfg)
    # float16 is the storage precision; round fresh features the same way so a first run and a
    # run that reads the cache train on identical inputs
    frames = log_mel(signal, cfg).astype(np.float16)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, frames)
        tmp.replace(path)
    return frames.astype(np.float32)


@dataclass
class WindowSet:
    """Windows of a list of songs: per-song frames plus an index of ``(song, window)`` pairs."""

    cfg: FeatureConfig
    songs: list[Song]
    frames: list[np.ndarray]  # per song, (n_mels, T) float16 or float32
    index: np.ndarray  # (N, 2) int: song number, window number
    targets: np.ndarray  # (N, 2) float32, per window
    failed: list[str]  # one line per song that could not be decoded

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def window(self, i: int) -> np.ndarray:
        """Window ``i`` as ``(n_mels, n_frames)`` float32."""
        s, w = self.index[i]
        start = int(w) * self.cfg.window_hop_frames
        return np.asarray(self.frames[s][:, start : start + self.cfg.n_frames], dtype=np.float32)

    def batch(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Windows ``idx`` as ``(B, 1, n_mels, n_frames)`` float32."""
        return np.stack([self.window(int(i)) for i in idx])[:, None]

    def song_of(self) -> np.ndarray:
        return self.index[:, 0]

    def song_targets(self) -> np.ndarray:
        return np.array([[s.valence, s.arousal] for s in self.songs], dtype=np.float32).reshape(-1, 2)

    def song_means(self, window_values: np.ndarray) -> np.ndarray:
        """Average per-window values ``(N, k)`` into per-song values ``(n_songs, k)``."""
        out = np.zeros((len(self.songs), window_values.shape[1]), dtype=np.float64)
        counts = np.bincount(self.index[:, 0], minlength=len(self.songs)).astype(np.float64)
        np.add.at(out, self.index[:, 0], window_values)
        return (out / np.maximum(counts, 1)[:, None]).astype(np.float32)


def _window_targets(song: Song, n: int, cfg: FeatureConfig) -> np.ndarray:
    out = np.tile(np.array([song.valence, song.arousal], dtype=np.float32), (n, 1))
    if song.dynamic is not None:
        starts = cfg.window_start_s(np.arange(n)) + song.start_s
        for j, t0 in enumerate(starts):
            m = song.dynamic.mean_between(float(t0), float(t0) + cfg.window_seconds)
            if m is not None:
                out[j] = m
    return out


def build_windows(
    songs: Sequence[Song],
    cfg: FeatureConfig,
    cache_dir: Path | None = None,
    *,
    progress: bool = False,
    desc: str = "features",
    strict: bool = False,
) -> WindowSet:
    """Decode, featurise (cached) and window every song.

    Songs whose audio fails to decode are listed in ``failed`` and left out (or, with
    ``strict``, raise). Raises :class:`DataError` when no song is usable.
    """
    kept: list[Song] = []
    frames: list[np.ndarray] = []
    index: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    failed: list[str] = []
    for song in progress_iter(songs, progress, desc, unit="song", tty_only=False):
        try:
            f = song_frames(song, cfg, cache_dir)
        except AudioError as exc:
            if strict:
                raise
            failed.append(str(exc))
            continue
        n = cfg.n_windows(f.shape[1])
        s = len(kept)
        kept.append(song)
        frames.append(f.astype(np.float16) if f.nbytes > 4_000_000 else f)
        index.append(np.stack([np.full(n, s), np.arange(n)], axis=1))
        targets.append(_window_targets(song, n, cfg))
    if not kept:
        raise DataError(f"no usable songs out of {len(songs)}" + (f"; first problem: {failed[0]}" if failed else ""))
    return WindowSet(
        cfg=cfg,
        songs=kept,
        frames=frames,
        index=np.concatenate(index).astype(np.int64),
        targets=np.concatenate(targets).astype(np.float32),
        failed=failed,
    )
