"""Metrics against hand-computed values, their conventions for degenerate input, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeemo.errors import DataError
from edgeemo.metrics import ccc, pearson, r2, regression_report, retention, rmse

Y = [1.0, 2.0, 3.0, 4.0]
P = [2.0, 2.0, 3.0, 5.0]


def test_hand_computed_values():
    # y: mean 2.5, deviations -1.5 -0.5 0.5 1.5 -> population variance (2.25+0.25+0.25+2.25)/4 = 1.25
    # p: mean 3.0, deviations -1 -1 0 2       -> population variance (1+1+0+4)/4 = 1.5
    # covariance: (1.5 + 0.5 + 0 + 3) / 4 = 1.25 ; squared mean gap (2.5-3)^2 = 0.25
    assert ccc(Y, P) == pytest.approx(2 * 1.25 / (1.25 + 1.5 + 0.25), abs=1e-12)  # = 5/6
    assert ccc(Y, P) == pytest.approx(5 / 6, abs=1e-12)
    # errors 1 0 0 1 -> mean square 0.5
    assert rmse(Y, P) == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert pearson(Y, P) == pytest.approx(1.25 / math.sqrt(1.25 * 1.5), abs=1e-12)
    # SS_res = 1 + 0 + 0 + 1 = 2 ; SS_tot = 4 * 1.25 = 5
    assert r2(Y, P) == pytest.approx(1 - 2 / 5, abs=1e-12)


def test_a_constant_offset_costs_ccc_but_not_pearson():
    p = np.array(Y) + 1.0
    # covariance = variance = 1.25 ; gap^2 = 1 -> 2.5 / (1.25 + 1.25 + 1)
    assert ccc(Y, p) == pytest.approx(2.5 / 3.5, abs=1e-12)
    assert pearson(Y, p) == pytest.approx(1.0, abs=1e-12)
    assert rmse(Y, p) == pytest.approx(1.0, abs=1e-12)
    assert r2(Y, p) == pytest.approx(1 - 4 / 5, abs=1e-12)
    # a scale error too: p = 2y -> cov 2.5, var_p 5, gap^2 6.25
    assert ccc(Y, 2 * np.array(Y)) == pytest.approx(5.0 / (1.25 + 5 + 6.25), abs=1e-12)


def test_against_an_independent_formula_on_random_data():
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, 200)
    p = 0.6 * t + 0.2 * rng.standard_normal(200) + 0.1
    cov = np.cov(t, p, ddof=0)
    expected = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (t.mean() - p.mean()) ** 2)
    assert ccc(t, p) == pytest.approx(expected, abs=1e-12)
    assert pearson(t, p) == pytest.approx(np.corrcoef(t, p)[0, 1], abs=1e-12)
    assert rmse(t, p) == pytest.approx(np.sqrt(np.mean((t - p) ** 2)), abs=1e-12)
    assert r2(t, p) == pytest.approx(1 - np.sum((t - p) ** 2) / np.sum((t - t.mean()) ** 2), abs=1e-12)
    assert ccc(t, p) == pytest.approx(ccc(p, t), abs=1e-12)  # symmetric


def test_perfect_and_negated_predictions():
    t = np.array([-0.8, -0.3, 0.0, 0.3, 0.8])  # symmetric about 0
    assert ccc(t, t) == pytest.approx(1.0)
    assert pearson(t, t) == pytest.approx(1.0)
    assert r2(t, t) == 1.0 and rmse(t, t) == 0.0
    assert ccc(t, -t) == pytest.approx(-1.0)
    assert pearson(t, -t) == pytest.approx(-1.0)
    assert r2(t, -t) == pytest.approx(1 - 4 * np.sum(t**2) / np.sum(t**2))  # = -3
    # negating data that is not centred is worse than uncorrelated for CCC but not exactly -1
    assert -1.0 < ccc(Y, -np.array(Y)) < 0


def test_constant_predictions():
    assert ccc(Y, [2.5] * 4) == 0.0  # no covariance with a varying truth
    assert ccc(Y, [7.0] * 4) == 0.0
    assert pearson(Y, [2.5] * 4) == 0.0  # undefined correlation reported as none
    assert pearson([2.5] * 4, Y) == 0.0
    assert r2(Y, [2.5] * 4) == pytest.approx(0.0)  # the mean predictor
    assert rmse(Y, [2.5] * 4) == pytest.approx(math.sqrt(1.25))


def test_constant_truth():
    same = [0.3, 0.3, 0.3]
    assert ccc(same, same) == 1.0  # identical constants agree perfectly
    assert rmse(same, same) == 0.0
    assert r2(same, same) == 1.0
    assert pearson(same, same) == 0.0
    other = [0.5, 0.5, 0.5]
    assert ccc(same, other) == 0.0  # denominator is the squared gap only
    assert r2(same, other) == 0.0
    assert rmse(same, other) == pytest.approx(0.2)


@pytest.mark.parametrize("fn", [ccc, rmse, pearson, r2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_raise(fn, bad: float):
    with pytest.raises(DataError, match="NaN or inf"):
        fn([1.0, bad, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="NaN or inf"):
        fn([1.0, 2.0, 3.0], [1.0, 2.0, bad])


@pytest.mark.parametrize("fn", [ccc, rmse, pearson, r2, regression_report])
def test_shape_mismatch_and_empty_raise(fn):
    with pytest.raises(DataError, match="shape"):
        fn(np.zeros((4, 2)), np.zeros((3, 2)))
    with pytest.raises(DataError, match="shape"):
        fn(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(DataError, match="empty"):
        fn(np.zeros((0, 2)), np.zeros((0, 2)))


def test_regression_report():
    rng = np.random.default_rng(5)
    t = rng.uniform(-1, 1, (30, 2))
    p = t * np.array([0.5, 0.9]) + 0.1 * rng.standard_normal((30, 2))
    rep = regression_report(t, p)
    assert set(rep) == {f"{m}_{d}" for m in ("ccc", "rmse", "pearson", "r2") for d in ("valence", "arousal")} | {
        "ccc_mean"
    }
    for i, d in enumerate(("valence", "arousal")):
        assert rep[f"ccc_{d}"] == ccc(t[:, i], p[:, i])
        assert rep[f"rmse_{d}"] == rmse(t[:, i], p[:, i])
        assert rep[f"pearson_{d}"] == pearson(t[:, i], p[:, i])
        assert rep[f"r2_{d}"] == r2(t[:, i], p[:, i])
    assert rep["ccc_mean"] == pytest.approx((rep["ccc_valence"] + rep["ccc_arousal"]) / 2)
    assert rep["ccc_arousal"] > rep["ccc_valence"]  # columns not swapped: arousal is the better-predicted one
    assert all(isinstance(v, float) for v in rep.values())
    with pytest.raises(DataError, match=r"\(n, 2\)"):
        regression_report(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(DataError, match=r"\(n, 2\)"):
        regression_report(np.zeros(5), np.zeros(5))
    with pytest.raises(DataError, match="NaN"):
        regression_report(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_retention():
    assert retention(0.6, 0.8) == pytest.approx(0.75)
    assert retention(0.9, 0.8) == pytest.approx(1.125)
    assert retention(-0.1, 0.5) == pytest.approx(-0.2)
    for teacher in (0.0, -0.3, float("nan")):
        with pytest.raises(DataError, match="teacher CCC"):
            retention(0.5, teacher)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1, 1, allow_nan=False), st.floats(-1, 1, allow_nan=False)), min_size=2, max_size=30)
)
def test_ccc_is_bounded_by_pearson(pairs: list[tuple[float, float]]):
    t, p = (np.array(c) for c in zip(*pairs, strict=True))
    c = ccc(t, p)
    assert -1.0 - 1e-9 <= c <= 1.0 + 1e-9
    if t.std() > 1e-6 and p.std() > 1e-6:
        assert abs(c) <= abs(pearson(t, p)) + 1e-9
