"""Classifiers for frozen-feature peer systems, chosen by artist-grouped search: SVM / logistic regression.

Owns the scikit-learn pipelines (:func:`make_svc`: StandardScaler + RBF SVC; :func:`make_lr`:
StandardScaler + logistic regression), the grid search over artist-grouped folds of the
training part (:func:`grouped_search`), and :class:`PeerModel` / :func:`fit_peer`: a 4-class
quadrant model plus two binary models whose continuous scores give the valence score
(Q1/Q4 positive) and the arousal score (Q1/Q2 positive). Metrics come from
:mod:`edgeemo.metrics`, so peers and edgeemo models are scored alike. Used by
``edgeemo cv`` (:mod:`edgeemo.cv_systems`) and ``benchmarks/peers.py``; needs the
``[train]`` extra (scikit-learn), imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeemo import metrics

SVC_GRID: dict[str, list[Any]] = {"C": [0.3, 1, 3, 10, 30], "gamma": ["scale", 0.003, 0.01, 0.03]}
LR_GRID: dict[str, list[Any]] = {"C": [0.01, 0.03, 0.1, 0.3, 1, 3]}
POSITIVE = {"valence": ("Q1", "Q4"), "arousal": ("Q1", "Q2")}


def param_grid(grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``grid`` values, in a fixed order (first key varies slowest)."""
    out: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        out = [{**p, key: v} for p in out for v in values]
    return out


def grouped_folds(groups: Sequence[str], n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold ``(train, validation)`` index pairs: a group (artist) never falls on both sides."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"{n_splits}-fold grouped CV needs at least {n_splits} groups, got {n_groups}")
    dummy = np.zeros((len(groups), 1))
    return [(tr, va) for tr, va in GroupKFold(n_splits=n_splits).split(dummy, groups=groups)]


def macro_f1(truth: Sequence[str], pred: Sequence[str]) -> float:
    """Macro-F1 over Q1..Q4 (:func:`edgeemo.metrics.classification_report`)."""
    return metrics.classification_report(np.asarray(truth), np.asarray(pred))["macro_f1"]


def nan_mean(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class SearchResult:
    """Outcome of :func:`grouped_search`: the chosen parameters, their CV score and every candidate's."""

    params: dict[str, Any]
    score: float
    scores: list[tuple[dict[str, Any], float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "cv_score": self.score}


def grouped_search(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    make_model: Callable[[dict[str, Any]], Any],
    grid: dict[str, Sequence[Any]],
    score: Callable[[Any, np.ndarray, np.ndarray], float],
    n_splits: int = 5,
) -> SearchResult:
    """Choose the ``grid`` point with the best mean ``score(model, x_val, y_val)`` over grouped folds.

    ``make_model(params)`` returns an unfitted estimator (scaling included). Ties go to the
    earlier grid point; a fold whose score is NaN (e.g. one class only) is left out of the mean.
    """
    folds = grouped_folds(groups, n_splits)
    scores: list[tuple[dict[str, Any], float]] = []
    for params in param_grid(grid):
        fold_scores = []
        for tr, va in folds:
            model = make_model(params).fit(x[tr], y[tr])
            fold_scores.append(score(model, x[va], y[va]))
        scores.append((params, nan_mean(fold_scores)))
    best = max(range(len(scores)), key=lambda i: (-math.inf if math.isnan(scores[i][1]) else scores[i][1], -i))
    return SearchResult(scores[best][0], scores[best][1], scores)


def score_macro_f1(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return macro_f1(y, model.predict(x))


def binary_scores(model: Any, x: np.ndarray) -> np.ndarray:
    """A continuous score for the positive class: ``decision_function`` if any, else P(positive)."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x), dtype=np.float64)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)


def score_auc(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return metrics.roc_auc(np.asarray(y, dtype=bool), binary_scores(model, x))


def peer_metrics(
    truth: Sequence[str], pred: Sequence[str], valence: np.ndarray, arousal: np.ndarray
) -> dict[str, float]:
    """Song-level metrics with the keys of :func:`edgeemo.metrics.quadrant_report`.

    Accuracy and F1 of the 4-class prediction ``pred``, AUCs of the binary scores.
    """
    t = np.asarray(truth)
    cls = metrics.classification_report(t, np.asarray(pred))
    return {
        "quadrant_accuracy": cls["accuracy"],
        "quadrant_macro_f1": cls["macro_f1"],
        "valence_auc": metrics.roc_auc(np.isin(t, POSITIVE["valence"]), valence),
        "arousal_auc": metrics.roc_auc(np.isin(t, POSITIVE["arousal"]), arousal),
        **{f"f1_{q}": cls[f"f1_{q}"] for q in metrics.QUADRANT_LABELS},
        "n_songs": int(t.size),
    }


def make_svc(params: dict[str, Any]) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel="rbf", **params))


def make_lr(params: dict[str, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **params))


@dataclass
class PeerModel:
    """A fitted peer: the 4-class model plus the two binary models that give valence and arousal scores."""

    quadrant: Any
    valence: Any
    arousal: Any
    search: dict[str, SearchResult]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.quadrant.predict(x), binary_scores(self.valence, x), binary_scores(self.arousal, x)


def fit_peer(
    x: np.ndarray,
    quadrants: Sequence[str],
    groups: Sequence[str],
    make_model: Callable[[dict[str, Any]], Any],
    grid: dict[str, Sequence[Any]],
    n_splits: int,
    quadrant_search: SearchResult | None = None,
) -> PeerModel:
    """Grouped search then refit on all of ``x``: 4-class by macro-F1, valence/arousal sign by AUC."""
    q = np.asarray(quadrants)
    search = {"quadrant": quadrant_search or grouped_search(x, q, groups, make_model, grid, score_macro_f1, n_splits)}
    fitted = {"quadrant": make_model(search["quadrant"].params).fit(x, q)}
    for dim, pos in POSITIVE.items():
        yb = np.isin(q, pos).astype(int)
        search[dim] = grouped_search(x, yb, groups, make_model, grid, score_auc, n_splits)
        fitted[dim] = make_model(search[dim].params).fit(x, yb)
    return PeerModel(fitted["quadrant"], fitted["valence"], fitted["arousal"], search)


def evaluate_peer(model: PeerModel, x: np.ndarray, quadrants: Sequence[str]) -> dict[str, float]:
    pred, val, aro = model.predict(x)
    return peer_metrics(quadrants, pred, val, aro)
