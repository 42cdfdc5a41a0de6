"""Scoring any predictor (torch checkpoint or ONNX bundle) on a WindowSet, numpy only.

Owns the step from per-window predictions to the reported figures: window-level
metrics (the selection metric) and song-level metrics (mean of a song's windows vs
its song label), with the same code for training-time validation, ``edgeemo
evaluate`` and the export gate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeemo.data.windows import WindowSet
from edgeemo.metrics import regression_report

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
