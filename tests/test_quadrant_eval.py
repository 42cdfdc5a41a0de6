"""Quadrant evaluation: metric functions against hand-computed values, and ``edgeemo evaluate`` on 4Q data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeemo.cli import main
from edgeemo.data.quadrants import load_quadrants
from edgeemo.data.types import Song
from edgeemo.data.windows import WindowSet
from edgeemo.errors import DataError
from edgeemo.evaluation import SONG_PREDICTION_FIELDS, song_predictions, song_quadrant_report
from edgeemo.metrics import classification_report, confusion_matrix, quadrant_of, quadrant_report, roc_auc
from edgeemo.runtime import EmotionModel, quadrant_label
from tests.data_fixtures import write_miniature_quadrants
from tests.runtime_fixtures import SMALL_CFG, cached_bundle, mood_clip, write_clip


# --- quadrant_of ---------------------------------------------------------------------------
def test_quadrant_of_signs_and_boundaries():
    v = [0.5, -0.5, -0.5, 0.5, 0.0, -0.0, 0.0, -1e-9, -1e-9, 0.0]
    a = [0.5, 0.5, -0.5, -0.5, 0.0, 0.0, -1e-9, 0.0, -1e-9, 0.7]
    # 0 (and -0.0) counts as positive: (0,0) Q1, (0,-e) Q4, (-e,0) Q2, (-e,-e) Q3, (0,+) Q1
    want = ["Q1", "Q2", "Q3", "Q4", "Q1", "Q1", "Q4", "Q2", "Q3", "Q1"]
    assert quadrant_of(v, a).tolist() == want
    assert quadrant_of(np.array([[0.1, -0.1]]), np.array([[-0.1, 0.1]])).tolist() == [["Q4", "Q2"]]  # keeps shape
    grid = np.array([-1.0, -1e-12, -0.0, 0.0, 1e-12, 1.0])
    gv, ga = np.meshgrid(grid, grid)
    got = quadrant_of(gv.ravel(), ga.ravel())
    assert got.tolist() == [quadrant_label(x, y) for x, y in zip(gv.ravel(), ga.ravel(), strict=True)]
    with pytest.raises(DataError, match="NaN"):
        quadrant_of([math.nan], [0.0])


# --- roc_auc -----------------------------------------------------------------------------
def test_roc_auc_hand_computed_with_ties():
    # classic: positives {0.35, 0.8} vs negatives {0.1, 0.4}: pairs won 1 + 2 = 3 of 4
    assert roc_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # ties: scores 3 1 2 2 2 -> ranks 5, 1, 3, 3, 3 (the three 2s share ranks 2..4, average 3)
    # positives (3, 2, 2): R_pos = 5 + 3 + 3 = 11; U = 11 - 3*4/2 = 5; AUC = 5 / (3*2) = 5/6
    # pairwise: 3 beats 1 and 2 (2); each positive 2 beats 1 (1) and ties 2 (0.5) -> 2 + 1.5 + 1.5 = 5
    assert roc_auc([True, False, True, False, True], [3, 1, 2, 2, 2]) == pytest.approx(5 / 6)
    # all scores equal: every pair is a tie -> 0.5; 0/1 integers are accepted as labels
    assert roc_auc([1, 0, 1, 0], [0.2, 0.2, 0.2, 0.2]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0, 0], [0.0, 0.1, 0.2, 0.3]) == 0.0  # perfectly inverted
    assert math.isnan(roc_auc([True, True], [0.1, 0.2]))  # one class only
    assert math.isnan(roc_auc([False, False, False], [0.1, 0.2, 0.3]))
    with pytest.raises(DataError):
        roc_auc([True, False], [0.1])
    with pytest.raises(DataError, match="boolean"):
        roc_auc([2, 0], [0.1, 0.2])


# --- confusion matrix and classification report ----------------------------------------------
TRUE = ["Q1", "Q1", "Q2", "Q3", "Q3", "Q3"]
PRED = ["Q1", "Q2", "Q2", "Q3", "Q1", "Q3"]


def test_confusion_matrix_hand_computed():
    # rows true, columns predicted: Q1 -> (Q1, Q2); Q2 -> Q2; Q3 -> (Q3, Q1, Q3); no Q4 at all
    want = [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    cm = confusion_matrix(TRUE, PRED)
    assert cm.tolist() == want and cm.dtype == np.int64
    assert confusion_matrix(TRUE, PRED, labels=("Q3", "Q1", "Q2", "Q4"))[0].tolist() == [2, 1, 0, 0]
    with pytest.raises(DataError, match="unknown labels Q5"):
        confusion_matrix(["Q1", "Q5"], ["Q1", "Q1"])
    with pytest.raises(DataError, match="differ in length"):
        confusion_matrix(["Q1"], ["Q1", "Q2"])


def test_classification_report_with_a_missing_class():
    rep = classification_report(TRUE, PRED)
    # F1 = 2TP / (2TP + FP + FN)
    # Q1: TP 1, FP 1 (a Q3 predicted Q1), FN 1 (a Q1 predicted Q2) -> 2/4 = 0.5
    # Q2: TP 1, FP 1, FN 0 -> 2/3 ; Q3: TP 2, FP 0, FN 1 -> 4/5 ; Q4 neither true nor predicted -> NaN
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["f1_Q1"] == pytest.approx(0.5)
    assert rep["f1_Q2"] == pytest.approx(2 / 3)
    assert rep["f1_Q3"] == pytest.approx(0.8)
    assert math.isnan(rep["f1_Q4"])
    assert rep["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)  # Q4 left out of the mean
    # a class with songs that is never predicted scores 0 and counts in the mean
    # Q1: TP 1, FP 1, FN 0 -> 2/3 ; Q4: TP 0, FN 1 -> 0 ; Q2, Q3 absent
    rep = classification_report(["Q1", "Q4"], ["Q1", "Q1"])
    assert (rep["f1_Q1"], rep["f1_Q4"], rep["accuracy"]) == (pytest.approx(2 / 3), 0.0, 0.5)
    assert rep["macro_f1"] == pytest.approx(1 / 3)
    with pytest.raises(DataError):
        classification_report([], [])


def test_quadrant_report_hand_computed():
    true = ["Q1", "Q2", "Q3", "Q4", "Q1", "Q3"]
    v = [0.5, -0.2, 0.1, 0.3, -0.1, -0.4]
    a = [0.2, 0.6, -0.3, 0.0, 0.4, -0.5]
    # predicted quadrants: Q1 Q2 Q4 Q1 (arousal 0 counts as positive) Q2 Q3 -> 3 of 6 right
    # F1: Q1 TP1 FP1 FN1 -> 0.5 ; Q2 TP1 FP1 -> 2/3 ; Q3 TP1 FN1 -> 2/3 ; Q4 FP1 FN1 -> 0
    # valence AUC: Q1/Q4 scores (0.5, 0.3, -0.1) vs (-0.2, 0.1, -0.4): 3 + 3 + 2 = 8 of 9 pairs
    # arousal AUC: Q1/Q2 scores (0.2, 0.6, 0.4) vs (-0.3, 0.0, -0.5): all 9 pairs -> 1
    rep = quadrant_report(true, v, a)
    assert rep["quadrant_accuracy"] == pytest.approx(0.5)
    assert [rep[f"f1_Q{i}"] for i in (1, 2, 3, 4)] == pytest.approx([0.5, 2 / 3, 2 / 3, 0.0])
    assert rep["quadrant_macro_f1"] == pytest.approx(11 / 24)
    assert rep["valence_auc"] == pytest.approx(8 / 9)
    assert rep["arousal_auc"] == pytest.approx(1.0)
    assert rep["n_songs"] == 6
    with pytest.raises(DataError):
        quadrant_report(true, v[:-1], a[:-1])


# --- song level on a WindowSet ---------------------------------------------------------------
def test_song_quadrant_report_skips_unlabelled_songs():
    songs = [
        Song("a", Path("a.wav"), 0.5, 0.5, quadrant="Q1"),
        Song("b", Path("b.wav"), -0.5, -0.5),  # no quadrant: left out of the quadrant metrics
        Song("c", Path("c.wav"), -0.5, -0.5, quadrant="Q3", group="artist x"),
    ]
    index = np.array([[0, 0], [0, 1], [1, 0], [2, 0], [2, 1]])
    ws = WindowSet(SMALL_CFG, songs, [], index, np.zeros((5, 2), np.float32), [])
    preds = np.array([[0.2, 0.4], [0.4, -0.2], [-0.5, -0.5], [-0.2, -0.1], [0.0, -0.3]], np.float32)
    # song means: a (0.3, 0.1) Q1 ; b (-0.5, -0.5) Q3 ; c (-0.1, -0.2) Q3
    q = song_quadrant_report(ws, preds)
    assert q is not None and q.n_unlabelled == 1
    assert q.metrics["n_songs"] == 2 and q.metrics["quadrant_accuracy"] == 1.0
    assert q.metrics["valence_auc"] == 1.0 and q.metrics["arousal_auc"] == 1.0
    assert q.metrics["quadrant_macro_f1"] == 1.0  # Q2 and Q4 occur nowhere: left out
    assert q.confusion.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    rows = song_predictions(ws, preds)
    assert [tuple(r) for r in rows] == [SONG_PREDICTION_FIELDS] * 3
    assert [r["n_windows"] for r in rows] == [2, 1, 2]
    assert [r["quadrant_true"] for r in rows] == ["Q1", "", "Q3"]
    assert [r["quadrant_pred"] for r in rows] == ["Q1", "Q3", "Q3"]
    assert (rows[2]["valence_pred"], rows[2]["arousal_pred"]) == pytest.approx((-0.1, -0.2))
    assert (rows[2]["group"], rows[1]["group"]) == ("artist x", "b")
    unlabelled = WindowSet(SMALL_CFG, songs[1:2], [], np.array([[0, 0]]), np.zeros((1, 2), np.float32), [])
    assert song_quadrant_report(unlabelled, preds[:1]) is None


# --- edgeemo evaluate ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return cached_bundle(tmp_path_factory, SMALL_CFG)


@pytest.fixture(scope="module")
def mini_4q(tmp_path_factory) -> Path:
    return write_miniature_quadrants(tmp_path_factory.mktemp("q") / "mini", n_per_quadrant=2, seconds=3.0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_4q_writes_predictions_and_confusion(bundle, mini_4q, tmp_path):
    pytest.importorskip("matplotlib")
    out_csv, png, js = tmp_path / "pred.csv", tmp_path / "cm.png", tmp_path / "r.json"
    args = ["evaluate", str(bundle), "--data", str(mini_4q), "--predictions", str(out_csv), "--confusion", str(png)]
    res = CliRunner().invoke(main, [*args, "--json", str(js)])
    assert res.exit_code == 0, res.output
    for text in ("quadrants (song level, 8 songs)", "accuracy", "macro-F1", "V-AUC", "A-AUC", "Q3 sad", "confusion"):
        assert text in res.stdout
    assert "song    valence" in res.stdout  # the CCC table is still there
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = _read_csv(out_csv)
    songs = {s.id: s for s in load_quadrants(mini_4q).songs}
    assert tuple(rows[0]) == SONG_PREDICTION_FIELDS
    assert sorted(r["song_id"] for r in rows) == sorted(songs)
    model = EmotionModel.load(bundle)
    for r in rows:
        song = songs[r["song_id"]]
        assert (r["quadrant_true"], r["group"], Path(r["path"])) == (song.quadrant, song.group, song.path)
        assert (float(r["valence_true"]), float(r["arousal_true"])) == (song.valence, song.arousal)
        pred = model.predict_file(song.path)  # the runtime's own path: mean of the file's windows
        assert int(r["n_windows"]) == len(pred)
        # features are cached as float16 for evaluation, hence the tolerance
        assert float(r["valence_pred"]) == pytest.approx(pred.summary["valence"], abs=1e-4)
        assert float(r["arousal_pred"]) == pytest.approx(pred.summary["arousal"], abs=1e-4)
        assert r["quadrant_pred"] == quadrant_label(float(r["valence_pred"]), float(r["arousal_pred"]))
        assert r["quadrant_pred"] == pred.summary["quadrant"] and r["mood_pred"] == pred.summary["mood"]
        assert r["mood_true"] == {"Q1": "happy", "Q2": "tense", "Q3": "sad", "Q4": "calm"}[song.quadrant]

    # the reported quadrant metrics are those of the written predictions
    report = json.loads(js.read_text())["quadrants"]
    truth = [r["quadrant_true"] for r in rows]
    vp, ap = (np.array([float(r[k]) for r in rows]) for k in ("valence_pred", "arousal_pred"))
    want = quadrant_report(truth, vp, ap)
    assert {k: report[k] for k in want} == pytest.approx(want, nan_ok=True)
    assert report["confusion"] == confusion_matrix(truth, [r["quadrant_pred"] for r in rows]).tolist()
    assert np.array(report["confusion"]).sum(axis=1).tolist() == [2, 2, 2, 2]


def test_evaluate_without_quadrants(bundle, tmp_path):
    for i in range(2):
        write_clip(tmp_path / f"c{i}.wav", mood_clip(3.0, 16000, seed=i), 16000)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,valence,arousal\nc0.wav,0.2,-0.4\nc1.wav,-0.6,0.1\n")
    out_csv, png = tmp_path / "pred.csv", tmp_path / "cm.png"
    base = ["evaluate", str(bundle), "--data", str(manifest)]

    res = CliRunner().invoke(main, [*base, "--predictions", str(out_csv), "--confusion", str(png)])
    assert res.exit_code == 2
    assert res.output.startswith("error: --confusion needs quadrant labels") and res.output.count("\n") == 1
    assert not out_csv.exists() and not png.exists()  # refused before any work

    res = CliRunner().invoke(main, [*base, "--predictions", str(tmp_path / "nowhere" / "p.csv")])
    assert res.exit_code == 2 and res.output.startswith("error: --predictions") and res.output.count("\n") == 1

    res = CliRunner().invoke(main, [*base, "--predictions", str(out_csv)])
    assert res.exit_code == 0, res.output
    assert "quadrants" not in res.stdout and "window  mean" in res.stdout
    rows = _read_csv(out_csv)
    assert [(r["song_id"], r["valence_true"], r["quadrant_true"]) for r in rows] == [
        ("c0", "0.2", ""),
        ("c1", "-0.6", ""),
    ]
    assert all(r["quadrant_pred"] in {"Q1", "Q2", "Q3", "Q4"} and int(r["n_windows"]) >= 1 for r in rows)
