"""Evaluation metrics in numpy: CCC (the selection metric), RMSE, Pearson r, R², retention,
and quadrant metrics (accuracy, macro-F1, ROC AUC, confusion matrix) for Q1..Q4-labelled songs.

Numpy only, so checkpoints and exported bundles are scored by the same code.
Conventions: NaN/inf inputs raise :class:`DataError`; a constant series has Pearson
r = 0 (undefined correlation reported as no correlation); CCC of two identical
constant series is 1.
"""

from __future__ import annotations

import numpy as np

from edgeemo.errors import DataError
from edgeemo.mood import quadrant_code

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


# --- quadrants of Russell's plane ---------------------------------------------------------
QUADRANT_LABELS = ("Q1", "Q2", "Q3", "Q4")


def _labels(values: object, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise DataError(f"{what} must be 1-D, got shape {arr.shape}")
    return arr.astype(str)


def quadrant_of(valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """Quadrant labels ``"Q1"``..``"Q4"`` of (valence, arousal) points, elementwise (same shape as the inputs).

    Q1 = (+v, +a) happy, Q2 = (-v, +a) tense, Q3 = (-v, -a) sad, Q4 = (+v, -a) calm; a
    coordinate of exactly 0 counts as positive (so (0, 0) is Q1). The sign rule is
    :func:`edgeemo.mood.quadrant_code`, evaluated once per sign pattern and
    broadcast here.
    """
    v, a = _pair(valence, arousal)
    # table[v >= 0][a >= 0]; -1 stands for "negative", 0 for "non-negative"
    table = np.array([[quadrant_code(sv, sa) for sa in (-1.0, 0.0)] for sv in (-1.0, 0.0)])
    return table[(v >= 0).astype(np.intp), (a >= 0).astype(np.intp)]


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``y_true``.

    Rank-based (Mann-Whitney U): ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with
    ``R_pos`` the sum of the positives' ranks among all scores, tied scores sharing their
    average rank (so a tie between a positive and a negative counts one half). NaN when
    ``y_true`` holds only one class.
    """
    y = np.asarray(y_true)
    if y.dtype != np.bool_:
        if not np.all(np.isin(y, (0, 1))):
            raise DataError("roc_auc labels must be boolean (or 0/1)")
        y = y.astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise DataError(f"roc_auc expects 1-D labels and scores of one length, got {y.shape} and {s.shape}")
    if not np.all(np.isfinite(s)):
        raise DataError("roc_auc scores contain NaN or inf")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct score's first occurrence
    avg_rank = first_rank + (counts - 1) / 2.0
    r_pos = avg_rank[inverse.reshape(-1)][y].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion_matrix(
    true_labels: np.ndarray, pred_labels: np.ndarray, labels: tuple[str, ...] = QUADRANT_LABELS
) -> np.ndarray:
    """``(k, k)`` int counts: row = true label, column = predicted label, both in the order of ``labels``.

    A label outside ``labels`` raises :class:`DataError`.
    """
    t, p = _labels(true_labels, "true labels"), _labels(pred_labels, "predicted labels")
    if t.shape != p.shape:
        raise DataError(f"true and predicted labels differ in length: {t.size} vs {p.size}")
    pos = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({x for x in (*t, *p) if x not in pos})
    if unknown:
        raise DataError(f"unknown labels {', '.join(unknown)}; expected {', '.join(labels)}")
    out = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(out, ([pos[x] for x in t], [pos[x] for x in p]), 1)
    return out


def classification_report(
    true_labels: np.ndarray, pred_labels: np.ndarray, labels: tuple[str, ...] = QUADRANT_LABELS
) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` and ``f1_<label>`` for every label in ``labels``.

    Per-class F1 is ``2 TP / (2 TP + FP + FN)``: 0 for a class that has songs but is never
    predicted, or is predicted but has no songs. A class that is neither present nor
    predicted has no F1 (NaN) and is left out of the macro average, which is the mean
    over the classes that occur in the true or the predicted labels (as scikit-learn's
    ``f1_score(average="macro")`` without ``labels``). Empty input raises :class:`DataError`.
    """
    cm = confusion_matrix(true_labels, pred_labels, labels)
    n = int(cm.sum())
    if n == 0:
        raise DataError("classification metrics need at least one sample")
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # 2 TP + FP + FN
    f1 = np.full(len(labels), np.nan)
    np.divide(2.0 * tp, denom, out=f1, where=denom > 0)
    out: dict[str, float] = {"accuracy": float(tp.sum() / n), "macro_f1": float(np.nanmean(f1))}
    out.update({f"f1_{lab}": float(f) for lab, f in zip(labels, f1, strict=True)})
    return out


def quadrant_report(true_quadrants: np.ndarray, valence_pred: np.ndarray, arousal_pred: np.ndarray) -> dict[str, float]:
    """Quadrant metrics of continuous predictions against Q1..Q4 labels (one entry per song).

    Keys: ``quadrant_accuracy`` and ``quadrant_macro_f1`` of :func:`quadrant_of` of the
    predictions (see :func:`classification_report`), ``f1_Q1``..``f1_Q4``,
    ``valence_auc`` (positive-valence Q1/Q4 vs Q2/Q3, scored by predicted valence),
    ``arousal_auc`` (Q1/Q2 vs Q3/Q4, scored by predicted arousal; either NaN when only
    one side is present) and ``n_songs``.
    """
    q = _labels(true_quadrants, "true quadrants")
    v, a = _pair(valence_pred, arousal_pred)
    if v.ndim != 1 or v.shape != q.shape:
        raise DataError(f"expected one prediction per quadrant label: {q.size} labels, predictions {v.shape}")
    cls = classification_report(q, quadrant_of(v, a), QUADRANT_LABELS)
    return {
        "quadrant_accuracy": cls["accuracy"],
        "quadrant_macro_f1": cls["macro_f1"],
        "valence_auc": roc_auc(np.isin(q, ("Q1", "Q4")), v),
        "arousal_auc": roc_auc(np.isin(q, ("Q1", "Q2")), a),
        **{f"f1_{lab}": cls[f"f1_{lab}"] for lab in QUADRANT_LABELS},
        "n_songs": int(q.size),
    }
