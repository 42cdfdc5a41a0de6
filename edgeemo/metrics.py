"""Evaluation metrics in numpy: CCC (the selection metric), RMSE, Pearson r, R², retention.

Numpy only, so checkpoints and exported bundles are scored by the same code.
Conventions: NaN/inf inputs raise :class:`DataError`; a constant series has Pearson
r = 0 (undefined correlation reported as no correlation); CCC of two identical
constant series is 1.
"""

from __future__ import annotations

import numpy as np

from edgeemo.errors import DataError

DIMS = ("valence", "arousal")


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise DataError(f"metric inputs differ in shape: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise DataError("metric inputs are empty")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise DataError("metric inputs contain NaN or inf")
    return t, p


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two 1-D series."""
    t, p = _pair(y_true, y_pred)
    mt, mp = t.mean(), p.mean()
    vt, vp = t.var(), p.var()
    cov = ((t - mt) * (p - mp)).mean()
    denom = vt + vp + (mt - mp) ** 2
    if denom == 0.0:
        return 1.0  # identical constants
    return float(2.0 * cov / denom)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t, p = _pair(y_true, y_pred)
    st, sp = t.std(), p.std()
    if st == 0.0 or sp == 0.0:
        return 0.0
    return float(((t - t.mean()) * (p - p.mean())).mean() / (st * sp))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t, p = _pair(y_true, y_pred)
    ss_tot = ((t - t.mean()) ** 2).sum()
    ss_res = ((t - p) ** 2).sum()
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return float(1.0 - ss_res / ss_tot)


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All metrics for ``(n, 2)`` (valence, arousal) arrays: ``ccc_valence``, ..., ``ccc_mean``."""
    t, p = _pair(y_true, y_pred)
    if t.ndim != 2 or t.shape[1] != 2:
        raise DataError(f"expected (n, 2) valence/arousal arrays, got {t.shape}")
    out: dict[str, float] = {}
    for i, dim in enumerate(DIMS):
        out[f"ccc_{dim}"] = ccc(t[:, i], p[:, i])
        out[f"rmse_{dim}"] = rmse(t[:, i], p[:, i])
        out[f"pearson_{dim}"] = pearson(t[:, i], p[:, i])
        out[f"r2_{dim}"] = r2(t[:, i], p[:, i])
    out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2.0
    return out


def retention(student_ccc_mean: float, teacher_ccc_mean: float) -> float:
    """Student mean CCC as a fraction of the teacher's (on the same split)."""
    if not teacher_ccc_mean > 0:
        raise DataError(f"retention is undefined for a teacher CCC of {teacher_ccc_mean:.4f} (must be > 0)")
    return float(student_ccc_mean / teacher_ccc_mean)
