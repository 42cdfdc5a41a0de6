"""Scoring any predictor (torch checkpoint or ONNX bundle) on a WindowSet, numpy only.

Owns the step from per-window predictions to the reported figures: window-level
metrics (the selection metric) and song-level metrics (mean of a song's windows vs
its song label), with the same code for training-time validation, ``edgeemo
evaluate`` and the export gate; plus, for quadrant-labelled songs (4Q), song-level
quadrant metrics and the per-song predictions ``edgeemo evaluate`` writes out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeemo.data.windows import WindowSet
from edgeemo.metrics import QUADRANT_LABELS, confusion_matrix, quadrant_of, quadrant_report, regression_report
from edgeemo.mood import mood_of_code

Predictor = Callable[[np.ndarray], np.ndarray]  # (B, 1, n_mels, n_frames) float32 -> (B, 2)


def predict_windowset(predict: Predictor, windows: WindowSet, batch_size: int = 64) -> np.ndarray:
    """Predictions ``(N, 2)`` for every window, in batches."""
    out = [
        np.asarray(predict(windows.batch(range(s, min(s + batch_size, len(windows))))), dtype=np.float32)
        for s in range(0, len(windows), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def window_and_song_report(windows: WindowSet, preds: np.ndarray) -> dict[str, float]:
    """Window-level metrics (keys as :func:`regression_report`) plus song-level ones prefixed ``song_``."""
    report = regression_report(windows.targets, preds)
    if len(windows.songs) >= 2:
        song = regression_report(windows.song_targets(), windows.song_means(preds))
        report.update({f"song_{k}": v for k, v in song.items()})
    return report


@dataclass
class QuadrantEvaluation:
    """Song-level quadrant figures: :func:`edgeemo.metrics.quadrant_report` plus the confusion matrix."""

    metrics: dict[str, float]
    confusion: np.ndarray  # (4, 4) int, rows = true quadrant, columns = predicted, order ``labels``
    labels: tuple[str, ...] = QUADRANT_LABELS
    n_unlabelled: int = 0  # songs of the set without a quadrant (left out)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "labels": list(self.labels),
            "confusion": self.confusion.tolist(),
            "n_unlabelled": self.n_unlabelled,
        }


def song_quadrant_report(windows: WindowSet, preds: np.ndarray) -> QuadrantEvaluation | None:
    """Quadrant metrics of the songs of ``windows`` that carry a quadrant, or None when none does.

    A song's prediction is the mean of its windows' predictions ``preds`` ``(N, 2)``;
    songs without a quadrant are left out (counted in ``n_unlabelled``).
    """
    keep = [i for i, s in enumerate(windows.songs) if s.quadrant]
    if not keep:
        return None
    song_preds = windows.song_means(np.asarray(preds))[keep]
    truth = [windows.songs[i].quadrant for i in keep]
    metrics = quadrant_report(truth, song_preds[:, 0], song_preds[:, 1])
    confusion = confusion_matrix(truth, quadrant_of(song_preds[:, 0], song_preds[:, 1]), QUADRANT_LABELS)
    return QuadrantEvaluation(metrics, confusion, QUADRANT_LABELS, len(windows.songs) - len(keep))


SONG_PREDICTION_FIELDS = (
    "song_id",
    "path",
    "group",
    "valence_true",
    "arousal_true",
    "quadrant_true",
    "mood_true",
    "valence_pred",
    "arousal_pred",
    "quadrant_pred",
    "mood_pred",
    "n_windows",
)


def song_predictions(windows: WindowSet, preds: np.ndarray) -> list[dict[str, Any]]:
    """One dict per song (keys :data:`SONG_PREDICTION_FIELDS`): labels, mean window prediction, window count.

    ``quadrant_true`` is ``""`` for a song without a quadrant label; ``group`` is the
    song's split group (the normalised artist when the dataset names one, else its id).
    """
    means = windows.song_means(np.asarray(preds))
    counts = np.bincount(windows.song_of(), minlength=len(windows.songs))
    pred_q = quadrant_of(means[:, 0], means[:, 1]) if len(windows.songs) else np.zeros(0, str)
    return [
        {
            "song_id": s.id,
            "path": str(s.path),
            "group": s.group,
            "valence_true": float(s.valence),
            "arousal_true": float(s.arousal),
            "quadrant_true": s.quadrant or "",
            "mood_true": mood_of_code(s.quadrant or ""),
            "valence_pred": float(means[i, 0]),
            "arousal_pred": float(means[i, 1]),
            "quadrant_pred": str(pred_q[i]),
            "mood_pred": mood_of_code(str(pred_q[i])),
            "n_windows": int(counts[i]),
        }
        for i, s in enumerate(windows.songs)
    ]
