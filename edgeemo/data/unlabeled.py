"""Unlabeled audio for pretraining: finding the files in folders and choosing windows from them.

Owns which files of ``--unlabeled DIR...`` are used (audio extensions, a minimum
duration so sound effects are skipped, files excluded by path, e.g. the labelled
validation/test songs of the same run so their audio never reaches training), the
seeded file-level hold-out used to measure pretraining, and where in each file the
windows are taken. Numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeemo.errors import AudioError, DataError
from edgeemo.features import FeatureConfig
from edgeemo.runtime.audio import audio_info

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")


@dataclass
class UnlabeledFiles:
    """The usable files of some folders and why the others were left out."""

    files: list[Path]
    durations: dict[Path, float] = field(default_factory=dict)  # seconds, per file
    skipped: list[str] = field(default_factory=list)  # one line per file left out (too short, unreadable)
    excluded: int = 0  # files left out because ``exclude`` named them

    def hours(self, files: Sequence[Path] | None = None) -> float:
        return float(sum(self.durations.get(p, 0.0) for p in (self.files if files is None else files))) / 3600.0


def find_unlabeled(
    folders: Sequence[str | Path], *, min_seconds: float = 20.0, exclude: Iterable[str | Path] = ()
) -> UnlabeledFiles:
    """Audio files under ``folders`` (recursively, symlinks followed), sorted, deduplicated by real path.

    Files shorter than ``min_seconds`` or that cannot be opened are skipped (listed in
    ``skipped``); files whose real path is in ``exclude`` are counted in ``excluded``.
    Raises :class:`DataError` for a folder that does not exist or when nothing is usable.
    """
    excluded_paths = {Path(p).resolve() for p in exclude}
    seen: set[Path] = set()
    files: list[Path] = []
    durations: dict[Path, float] = {}
    skipped: list[str] = []
    n_excluded = 0
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise DataError(f"unlabeled audio folder not found: {root}")
        candidates = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        for p in candidates:
            real = p.resolve()
            if real in seen or not real.is_file():
                continue
            seen.add(real)
            if real in excluded_paths:
                n_excluded += 1
                continue
            try:
                duration = audio_info(p)[1]
            except AudioError as exc:
                skipped.append(str(exc))
                continue
            if duration < min_seconds:
                skipped.append(f"{p}: {duration:.1f} s is shorter than {min_seconds:g} s")
                continue
            files.append(p)
            durations[p] = duration
    if not files:
        raise DataError(
            f"no usable audio (>= {min_seconds:g} s, extensions {' '.join(AUDIO_EXTENSIONS)}) under "
            + ", ".join(str(f) for f in folders)
        )
    return UnlabeledFiles(files, durations, skipped, n_excluded)


def holdout_split(files: Sequence[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded ``(train, held_out)`` split of whole files (at least one of each when there are two or more)."""
    files = list(files)
    if len(files) < 2 or fraction <= 0:
        return files, []
    rng = np.random.default_rng([seed, 1729])
    order = rng.permutation(len(files))
    n_val = min(len(files) - 1, max(1, round(fraction * len(files))))
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val


def window_indices(n_frames_total: int, cfg: FeatureConfig, hop_s: float, max_windows: int) -> np.ndarray:
    """Indices of the windows taken from a file: about every ``hop_s`` seconds, at most ``max_windows``, evenly spread.

    Window ``k`` is the same window :func:`edgeemo.features.frame_windows` would cut at
    index ``k``; a file shorter than one window gives none.
    """
    n = cfg.n_windows(n_frames_total)
    if n == 0:
        return np.zeros(0, np.int64)
    step = max(1, round(hop_s / cfg.window_hop_s))
    idx = np.arange(0, n, step)
    if idx.size > max_windows:
        idx = idx[np.linspace(0, idx.size - 1, max_windows).round().astype(np.int64)]
    return idx.astype(np.int64)
