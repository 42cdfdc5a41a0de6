"""The windows of many files in several augmented views, for a teacher over musicnn tokens and its student.

Owns :class:`ViewSet` (per item -- a labelled song or an unlabeled file -- and per view, the
cached :class:`~edgeemo.train.views.FileView`; an index of ``(entry, window)`` pairs; per item its
(valence, arousal) label or NaN), :func:`build_viewset` (fills it from the view cache, computing
what is missing, skipping undecodable files with one line each) and the torch datasets the two
stages train on (and :func:`build_mix_viewset`, the unlabeled set of mixed views of the training
files): :class:`TokenWindows` (teacher: tokens -> label) and :class:`MelWindows`
(student: log-mel window -> ``[label | mask | teacher output]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeemo.errors import AudioError, DataError
from edgeemo.features import FeatureConfig
from edgeemo.filehash import content_digest
from edgeemo.progress import progress_iter
from edgeemo.train.tokenvit import pooled_tokens
from edgeemo.train.views import MAX_SECONDS, FileView, file_mix, file_view, mix_partner, token_windows


@dataclass
class ViewSet:
    """Windows of ``items`` (paths) in views ``0..n_views-1``; ``labels`` (n_items, 2), NaN where unlabeled."""

    features: FeatureConfig
    items: list[Path]
    labels: np.ndarray
    entries: list[tuple[int, int]]  # (item, view) per cached FileView
    views: list[FileView]
    index: np.ndarray  # (N, 2): entry, window
    failed: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def item_of(self) -> np.ndarray:
        """Item number of every window."""
        return np.asarray(self.entries, dtype=np.int64).reshape(-1, 2)[self.index[:, 0], 0]

    def select(self, mask: np.ndarray) -> ViewSet:
        """The same cache with only the windows where ``mask`` is true."""
        return ViewSet(self.features, self.items, self.labels, self.entries, self.views, self.index[mask], self.failed)

    def mel(self, i: int) -> np.ndarray:
        """Student window ``i`` as ``(n_mels, n_frames)`` float32."""
        e, w = self.index[i]
        start = int(w) * self.features.window_hop_frames
        return np.asarray(self.views[e].mel[:, start : start + self.features.n_frames], dtype=np.float32)

    def tokens(self, i: int) -> np.ndarray:
        """Teacher tokens of window ``i``: ``(N_TOKENS, 1506)`` float32."""
        e, w = self.index[i]
        centre = self.features.window_center_s(np.array([int(w)]))
        return np.asarray(token_windows(self.views[e].tokens, centre)[0], dtype=np.float32)

    def window_labels(self) -> np.ndarray:
        return self.labels[self.item_of()]

    def item_means(self, values: np.ndarray) -> np.ndarray:
        """Average per-window values ``(N, k)`` per item ``(n_items, k)`` (NaN for items with no window)."""
        n = len(self.items)
        items = self.item_of()
        out = np.zeros((n, values.shape[1]))
        counts = np.bincount(items, minlength=n).astype(np.float64)
        np.add.at(out, items, values)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (out / counts[:, None]).astype(np.float32)


def build_viewset(
    items: Sequence[Path],
    labels: np.ndarray | None,
    features: FeatureConfig,
    n_views: int,
    seed: int,
    model,
    weights_id: str,
    cache_dir: Path | None,
    *,
    max_windows: int | None = None,
    max_seconds: float = MAX_SECONDS,
    progress: bool = True,
    desc: str = "views",
) -> ViewSet:
    """Every item's views (from the cache when there), keeping at most ``max_windows`` windows per view
    (evenly spread), analysing at most the middle ``max_seconds`` of a file.
    Undecodable items are listed in ``failed`` and have no window."""
    items = [Path(p) for p in items]
    lab = np.full((len(items), 2), np.nan, np.float32) if labels is None else np.asarray(labels, np.float32)
    if lab.shape != (len(items), 2):
        raise DataError(f"labels must be (n_items, 2), got {lab.shape}")
    entries, fviews, rows, failed = [], [], [], []
    for i, path in enumerate(progress_iter(items, progress, desc, unit="file", tty_only=False)):
        try:
            got = [
                file_view(path, features, v, seed, model, weights_id, cache_dir, max_seconds) for v in range(n_views)
            ]
        except AudioError as exc:
            failed.append(str(exc))
            continue
        for v, fv in enumerate(got):
            n = fv.n_windows(features)
            w = np.arange(n)
            if max_windows is not None and w.size > max_windows:
                w = w[np.linspace(0, w.size - 1, max_windows).round().astype(np.int64)]
            e = len(entries)
            entries.append((i, v))
            fviews.append(fv)
            rows.append(np.stack([np.full(w.size, e), w], axis=1))
    if not rows:
        raise DataError(f"no usable audio out of {len(items)} file(s)" + (f": {failed[0]}" if failed else ""))
    return ViewSet(features, items, lab, entries, fviews, np.concatenate(rows).astype(np.int64), failed)


def build_mix_viewset(
    items: Sequence[Path],
    features: FeatureConfig,
    n_mixes: int,
    seed: int,
    model,
    weights_id: str,
    cache_dir: Path | None,
    *,
    max_seconds: float = MAX_SECONDS,
    progress: bool = True,
) -> ViewSet:
    """``n_mixes`` mixed views of every item, each with a partner among ``items`` (:func:`mix_partner`), as an
    unlabeled :class:`ViewSet` (a mixture has no label of its own; the teacher's outputs on it are its target).
    Items that cannot be decoded, or mixed with an undecodable partner, are listed in ``failed``."""
    items = [Path(p) for p in items]
    digests = [content_digest(p) for p in items]
    entries, fviews, rows, failed = [], [], [], []
    for i, path in enumerate(progress_iter(items, progress, f"mixes x{n_mixes}", unit="file", tty_only=False)):
        for k in range(n_mixes):
            j, share = mix_partner(digests[i], digests, k, seed)
            try:
                fv = file_mix(path, items[j], share, features, model, weights_id, cache_dir, max_seconds)
            except AudioError as exc:
                failed.append(str(exc))
                continue
            e, n = len(entries), fv.n_windows(features)
            entries.append((i, k))
            fviews.append(fv)
            rows.append(np.stack([np.full(n, e), np.arange(n)], axis=1))
    if not rows:
        raise DataError(f"no mixed view out of {len(items)} file(s)" + (f": {failed[0]}" if failed else ""))
    labels = np.full((len(items), 2), np.nan, np.float32)
    return ViewSet(features, items, labels, entries, fviews, np.concatenate(rows).astype(np.int64), failed)


class TokenWindows(Dataset):
    """``(tokens (N_TOKENS, 1506), label (2))`` of the labelled windows of a :class:`ViewSet`."""

    def __init__(self, data: ViewSet) -> None:
        labels = data.window_labels()
        keep = np.all(np.isfinite(labels), axis=1)
        self.data = data.select(keep)
        self.labels = labels[keep]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.data.tokens(i)), torch.from_numpy(self.labels[i])


class MelWindows(Dataset):
    """``(window (1, n_mels, n_frames), target)`` with target ``[label (2) | has label | teacher (2)]``, then,
    given ``feature_stats`` (mean, sd), the window's pooled musicnn tokens standardised by them.

    ``teacher`` holds the teacher's output for every window of ``data`` (same order); the label
    of an unlabeled window is 0 with mask 0.
    """

    def __init__(
        self, data: ViewSet, teacher: np.ndarray, feature_stats: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        labels = data.window_labels()
        has = np.all(np.isfinite(labels), axis=1)
        self.data = data
        self.targets = np.concatenate(
            [np.nan_to_num(labels), has[:, None].astype(np.float32), np.asarray(teacher, np.float32)], axis=1
        ).astype(np.float32)
        self.feature_stats = feature_stats

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.targets[i]
        if self.feature_stats is not None:
            mean, std = self.feature_stats
            pooled = pooled_tokens(self.data.tokens(i)[None])[0]
            target = np.concatenate([target, (pooled - mean) / std]).astype(np.float32)
        return torch.from_numpy(self.data.mel(i))[None], torch.from_numpy(target)


def concat_viewsets(a: ViewSet, b: ViewSet) -> ViewSet:
    """The windows of ``a`` then ``b`` (same features) as one set; ``b``'s items and entries follow ``a``'s."""
    if a.features != b.features:
        raise DataError("cannot join view sets with different features")
    n_items, n_entries = len(a.items), len(a.entries)
    entries = a.entries + [(i + n_items, v) for i, v in b.entries]
    index = np.concatenate([a.index, b.index + np.array([n_entries, 0])])
    return ViewSet(
        a.features,
        a.items + b.items,
        np.concatenate([a.labels, b.labels]),
        entries,
        a.views + b.views,
        index,
        a.failed + b.failed,
    )
