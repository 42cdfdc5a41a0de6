"""The emotion probe of pretraining: which directions of musicnn's embedding carry valence and arousal.

Owns fitting the probe (ridge regression from the standardised musicnn penultimate
embedding of each window to its song's (valence, arousal), on the windows of the
labelled *training* songs that are also among the unlabeled files) and the loss
term pretraining adds with it: the network's predicted embedding, read through the
probe, must give what musicnn's own embedding gives. Embedding MSE weighs all
200 dimensions alike, and a network that reproduces half their variance loses most
of the valence musicnn carries (measured: README); the probe term makes the two
emotion directions count as much as all the others together (at weight 1). The
probe's targets need no labels, so every unlabeled window (game soundtracks
included) teaches the emotion directions, not only the labelled songs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeemo.errors import DataError

MIN_PROBE_SONGS = 8  # fewer labelled songs than this cannot fit two directions out of 200 usefully


@dataclass(frozen=True)
class EmotionProbe:
    """``(valence, arousal) ≈ z @ weight + bias`` for a standardised embedding ``z``.

    ``scale`` is the std of each output over the pretraining windows, so the loss term
    is in units of the output's own spread. ``fit_r2`` is the in-sample R² per output on
    the labelled windows (how much of the labels musicnn explains, not a held-out figure).
    """

    weight: np.ndarray  # (D, 2)
    bias: np.ndarray  # (2,)
    scale: np.ndarray  # (2,)
    n_songs: int
    n_windows: int
    fit_r2: tuple[float, float]

    def apply(self, z: np.ndarray) -> np.ndarray:
        return z @ self.weight + self.bias

    def loss(self, z_pred: torch.Tensor, z_true: torch.Tensor) -> torch.Tensor:
        """Mean squared difference of the probe's outputs, each divided by its spread."""
        w = torch.as_tensor(self.weight / self.scale, dtype=z_pred.dtype, device=z_pred.device)
        return (((z_pred - z_true) @ w) ** 2).mean()

    def r2(self, z_pred: torch.Tensor, z_true: torch.Tensor) -> float:
        """R² of the probe outputs read from ``z_pred`` against those read from ``z_true`` (both outputs pooled)."""
        w = torch.as_tensor(self.weight, dtype=z_pred.dtype, device=z_pred.device)
        p_true = z_true @ w
        sse = float(((z_pred @ w - p_true) ** 2).sum())
        sst = float(((p_true - p_true.mean(0)) ** 2).sum())
        return 1.0 - sse / max(sst, 1e-12)

    def to_meta(self) -> dict[str, object]:
        return {
            "weight": self.weight,
            "bias": self.bias,
            "scale": self.scale,
            "n_songs": self.n_songs,
            "n_windows": self.n_windows,
            "fit_r2": list(self.fit_r2),
        }


def window_labels(
    file_of: np.ndarray, files: list[Path], labels: Mapping[str, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the windows whose file is a labelled song (by resolved path) and their ``(valence, arousal)``."""
    keyed = [labels.get(str(Path(f).resolve())) for f in files]
    rows = np.array([i for i, f in enumerate(file_of) if keyed[f] is not None], dtype=np.int64)
    y = np.array([keyed[file_of[i]] for i in rows], dtype=np.float64).reshape(-1, 2)
    return rows, y


def fit_probe(
    z: np.ndarray,
    file_of: np.ndarray,
    files: list[Path],
    labels: Mapping[str, tuple[float, float]],
    ridge: float,
) -> EmotionProbe:
    """Ridge regression (with intercept) of the labelled windows' ``(valence, arousal)`` on their rows of ``z``.

    ``z`` is every training window's standardised embedding; ``labels`` maps a resolved
    file path to its song's ``(valence, arousal)``. Raises :class:`DataError` when fewer
    than :data:`MIN_PROBE_SONGS` labelled songs are among the files.
    """
    rows, y = window_labels(file_of, files, labels)
    n_songs = len(set(file_of[rows].tolist()))
    if n_songs < MIN_PROBE_SONGS:
        raise DataError(
            f"the emotion probe needs labelled training songs among the unlabeled files (found {n_songs}, "
            f"need {MIN_PROBE_SONGS}): pass the labelled dataset's folder to --unlabeled too, or --probe-weight 0"
        )
    if ridge <= 0:
        raise DataError(f"the probe's ridge must be positive, got {ridge}")
    zl = z[rows].astype(np.float64)
    z_mean, y_mean = zl.mean(0), y.mean(0)
    zc, yc = zl - z_mean, y - y_mean
    weight = np.linalg.solve(zc.T @ zc + ridge * np.eye(zc.shape[1]), zc.T @ yc)
    bias = y_mean - z_mean @ weight
    fitted = zl @ weight + bias
    fit_r2 = 1.0 - ((fitted - y) ** 2).sum(0) / np.maximum(((y - y_mean) ** 2).sum(0), 1e-12)
    scale = np.maximum((z.astype(np.float64) @ weight).std(0), 1e-6)
    return EmotionProbe(
        weight.astype(np.float32),
        bias.astype(np.float32),
        scale.astype(np.float32),
        n_songs,
        len(rows),
        (float(fit_r2[0]), float(fit_r2[1])),
    )
