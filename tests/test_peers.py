"""Pure helpers of ``benchmarks/peers.py`` (no real data, no musicnn weights)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from edgeemo import metrics

pytest.importorskip("sklearn")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


def _load():
    spec = importlib.util.spec_from_file_location("benchmarks_peers", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


peers = _load()


def _toy(n_artists: int = 12, per_artist: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"artist{i}" for i in range(n_artists)], per_artist)
    quadrants = np.array(metrics.QUADRANT_LABELS)[rng.integers(0, 4, groups.size)]
    return groups, quadrants


def test_param_grid_is_the_full_product_in_order():
    grid = peers.param_grid(peers.SVC_GRID)
    assert len(grid) == 5 * 4
    assert grid[0] == {"C": 0.3, "gamma": "scale"} and grid[1] == {"C": 0.3, "gamma": 0.003}
    assert len({tuple(sorted(p.items(), key=str)) for p in grid}) == len(grid)
    assert peers.param_grid({}) == [{}]


@pytest.mark.parametrize("n_splits", [2, 5])
def test_grouped_folds_never_split_an_artist(n_splits):
    groups, _ = _toy()
    folds = peers.grouped_folds(groups, n_splits)
    assert len(folds) == n_splits
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen) == list(range(groups.size))  # every song validated exactly once
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])


def test_grouped_folds_need_enough_artists():
    with pytest.raises(ValueError, match="groups"):
        peers.grouped_folds(["a", "a", "b"], 5)


class _Recorder:
    """Fake estimator: remembers which artists it was fitted on; ``params['good']`` sets its score."""

    fits: ClassVar[list[set[str]]] = []

    def __init__(self, params):
        self.params = params

    def fit(self, x, y):
        self.artists = {f"artist{int(v)}" for v in x[:, 0]}
        _Recorder.fits.append(self.artists)
        return self


def test_grouped_search_keeps_artists_apart_and_picks_the_best():
    groups, quadrants = _toy()
    x = np.array([[float(g.removeprefix("artist"))] for g in groups])
    _Recorder.fits = []

    def score(model, x_val, y_val):
        val_artists = {f"artist{int(v)}" for v in x_val[:, 0]}
        assert not model.artists & val_artists  # no artist on both sides of a fold
        return model.params["good"]

    res = peers.grouped_search(x, quadrants, groups, _Recorder, {"good": [0.1, 0.7, 0.7, 0.3]}, score, n_splits=3)
    assert res.params == {"good": 0.7} and res.score == pytest.approx(0.7)
    assert res.scores[1][0] is res.params  # ties go to the earlier grid point
    assert len(_Recorder.fits) == 4 * 3


def test_grouped_search_skips_nan_folds():
    groups, quadrants = _toy()
    x = np.array([[float(g.removeprefix("artist"))] for g in groups])
    calls = iter(range(100))

    def score(model, x_val, y_val):
        return float("nan") if next(calls) % 2 else model.params["v"]

    res = peers.grouped_search(x, quadrants, groups, _Recorder, {"v": [0.2, 0.4]}, score, n_splits=2)
    assert res.params == {"v": 0.4} and res.score == pytest.approx(0.4)


def test_fit_peer_on_separable_toy_data():
    rng = np.random.default_rng(1)
    groups, quadrants = _toy(n_artists=16, per_artist=5)
    centres = {"Q1": (2, 2), "Q2": (-2, 2), "Q3": (-2, -2), "Q4": (2, -2)}
    x = np.array([centres[q] for q in quadrants], dtype=float) + rng.normal(0, 0.3, (quadrants.size, 2))
    model = peers.fit_peer(x, quadrants, groups, peers.make_lr, {"C": [0.1, 1.0]}, n_splits=2)
    m = peers.evaluate_peer(model, x, quadrants)
    assert m["quadrant_accuracy"] > 0.95 and m["valence_auc"] > 0.95 and m["arousal_auc"] > 0.95
    assert set(model.search) == {"quadrant", "valence", "arousal"}


def test_peer_metrics_agree_with_quadrant_report():
    rng = np.random.default_rng(2)
    truth = np.array(metrics.QUADRANT_LABELS)[rng.integers(0, 4, 40)]
    v, a = rng.normal(size=40), rng.normal(size=40)
    ours = peers.peer_metrics(truth, metrics.quadrant_of(v, a), v, a)
    assert ours == pytest.approx(metrics.quadrant_report(truth, v, a))


def test_format_table():
    rows = [
        {
            "system": "peer",
            "metrics": {
                "quadrant_accuracy": 0.5,
                "quadrant_macro_f1": 0.25,
                "valence_auc": math.nan,
                "arousal_auc": 0.875,
            },
            "ms_per_clip": 12.34,
        },
        {"system": "no metrics"},
    ]
    lines = peers.format_table(rows).splitlines()
    assert lines[0] == "| " + " | ".join(peers.TABLE_COLUMNS) + " |"
    assert lines[1].count("|") == len(peers.TABLE_COLUMNS) + 1
    assert lines[2] == "| peer | 0.500 | 0.250 | n/a | 0.875 | 12.3 |"
    assert lines[3] == "| no metrics | n/a | n/a | n/a | n/a | n/a |"


def test_json_safety():
    assert peers.json_safe({"a": [np.float64(math.nan), np.int64(3)], "b": (1.5,)}) == {"a": [None, 3], "b": [1.5]}


def test_librosa_features_shape():
    pytest.importorskip("librosa")
    t = np.arange(3 * peers.LIBROSA_SR) / peers.LIBROSA_SR
    y = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    f = peers.librosa_features(y)
    assert f.shape == (118,) and np.all(np.isfinite(f))
