"""A training recipe under the grouped-CV protocol end to end: each fold trains without its held-out songs,
exports, scores them; the three roles share one run per fold (the teacher role trains only the teacher); a second
CV run resumes and retrains nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("sklearn")

from edgeemo import recipes
from edgeemo.config import DataSource
from edgeemo.cv import grouped_folds, run_system
from edgeemo.data.quadrants import load_quadrants
from edgeemo.errors import EdgeemoError
from edgeemo.train.cv_recipe import fold_config, recipe_system
from tests.data_fixtures import write_miniature_quadrants
from tests.train_fixtures import tiny_config


@pytest.fixture()
def mini_recipe(tmp_path, monkeypatch):
    root = write_miniature_quadrants(tmp_path / "mini4q", n_per_quadrant=4, n_artists=8, seconds=5.0)
    cfg = tiny_config(gan_ratio=0.0, teacher_epochs=2, student_epochs=1, teacher_depth=1).replace(
        {"data.sources": [DataSource("quadrants", str(root)).to_dict()], "recipe": "cv-mini"}
    )
    monkeypatch.setitem(recipes._REGISTRY, "cv-mini", recipes.Recipe("cv-mini", 1, "test", cfg))
    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    return root


@pytest.mark.slow
def test_recipe_folds_leave_out_their_songs_and_resume(mini_recipe, tmp_path):
    songs = load_quadrants(mini_recipe).songs
    folds = grouped_folds(songs, 2, seed=0)
    work = tmp_path / "cv"
    runs = work / "recipe-runs"
    # the teacher role trains each fold's run up to its teacher only: no student, no bundle
    teacher = run_system(recipe_system("cv-mini@teacher"), songs, folds, work)
    assert len(teacher.folds) == 2 and len(list(runs.iterdir())) == 2  # one run per fold
    assert all((r / "teacher" / "best.pt").is_file() for r in runs.iterdir())
    assert not any((r / "student").exists() or (r / "bundle").exists() for r in runs.iterdir())
    teachers = {p: p.stat().st_mtime_ns for p in runs.rglob("teacher/best.pt")}

    # the int8 role then trains the students on the same runs and exports; the teachers are not retrained
    int8 = run_system(recipe_system("cv-mini"), songs, folds, work)
    assert [f.fold for f in int8.folds] == [0, 1] and not any(f.resumed for f in int8.folds)
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("teacher/best.pt")} == teachers
    for fold, result in zip(folds, int8.folds, strict=True):
        test_ids = {songs[i].id for i in fold.test}
        assert set(result.song_ids) == test_ids and len(result.valence) == len(test_ids)
        cfg = fold_config("cv-mini", [songs[i] for i in fold.test])
        run_dir = runs / f"cv-mini-{cfg.digest()}"
        split = json.loads((run_dir / "split.json").read_text())
        assert not test_ids & {i for k in ("train", "val", "test") for i in split[k]}  # never seen
        assert json.loads((run_dir / "config.json").read_text())["config"]["data"]["exclude"] == sorted(test_ids)
        # the scores are the bundle's int8 predictions averaged per song, as the runtime gives them (within one
        # int8 output step, 0.0078: the runtime streams the file, which moves the log-mel by ~1e-7)
        from edgeemo.runtime import EmotionModel

        model = EmotionModel.load(run_dir / "bundle")
        first = next(s for s in songs if s.id == result.song_ids[0])
        assert result.valence[0] == pytest.approx(float(np.mean(model.predict_file(first.path).valence)), abs=0.008)
    assert len(list(runs.iterdir())) == 2

    # the fold records are read back: nothing is trained or scored again
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("best.pt")}
    again = run_system(recipe_system("cv-mini"), songs, folds, work)
    assert all(f.resumed for f in again.folds) and [f.valence for f in again.folds] == [f.valence for f in int8.folds]
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("best.pt")} == before


def test_recipe_system_spec_errors(mini_recipe):
    with pytest.raises(EdgeemoError, match="role 'student' is not one of int8, fp32, teacher"):
        recipe_system("cv-mini@student")
    deam_only = tiny_config().replace({"data.sources": [DataSource("deam", str(mini_recipe)).to_dict()]})
    recipes._REGISTRY["cv-deam"] = recipes.Recipe("cv-deam", 1, "test", deam_only)
    try:
        with pytest.raises(EdgeemoError, match="no quadrant dataset or built-in corpus to cross-validate"):
            recipe_system("cv-deam")
    finally:
        del recipes._REGISTRY["cv-deam"]
    with pytest.raises(EdgeemoError, match="unknown recipe"):
        recipe_system("nope")


def test_recipe_system_with_changed_fields_is_another_system(mini_recipe):
    plain = recipe_system("cv-mini@teacher")
    changed = recipe_system("cv-mini,teacher.epochs=3,student.unlabeled=[],teacher.loss=ccc@teacher")
    assert changed.extra["overrides"] == {"teacher.epochs": 3, "student.unlabeled": [], "teacher.loss": "ccc"}
    assert changed.key != plain.key and changed.extra["recipe_digest"] != plain.extra["recipe_digest"]
    assert "teacher.epochs=3" in changed.name and "overrides" not in plain.extra
    assert recipe_system("cv-mini").key == plain.key.replace("-teacher", "-int8")
    songs = load_quadrants(mini_recipe).songs
    cfg = fold_config("cv-mini", songs[:2], {"teacher.epochs": 3})
    assert cfg.teacher.epochs == 3 and cfg.data.exclude == tuple(sorted(s.id for s in songs[:2]))
    for bad, match in (
        ("cv-mini,epochs=3", "expected SECTION.FIELD=VALUE"),
        ("cv-mini,data.exclude=[]", "the CV sets it"),
        ("cv-mini,teacher.nope=1", "nope"),
        ("cv-mini,teacher.epochs=0", "teacher.epochs"),
    ):
        with pytest.raises(EdgeemoError, match=match):
            recipe_system(bad)


def test_a_builtin_recipe_folds_over_the_builtin_corpus(tmp_path, monkeypatch):
    """The main job's recipe is a CV system over ``--data builtin``: each fold's run leaves out its test clips."""
    from edgeemo.cv import cv_dataset
    from edgeemo.train.rundata import prepare_run_data

    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    songs = cv_dataset("builtin:12").songs
    folds = grouped_folds(songs, 3, seed=0, stratify=False)
    system = recipe_system("tiny,data.corpus_n=12@teacher")  # accepted: tiny trains on the built-in corpus
    assert system.info(songs)["recipe"] == "tiny"
    test = [songs[i] for i in folds[0].test]
    cfg = fold_config("tiny", test, {"data.corpus_n": 12})
    data = prepare_run_data(tmp_path / "run", cfg.data, tmp_path / "cache")
    assert {s.id for s in data.excluded} == {s.id for s in test}
    used = {s.id for k in ("train", "val", "test") for s in data.splits[k]}
    assert used == {songs[i].id for i in folds[0].train}  # every other clip, none of the held-out ones
    # a recipe whose corpus lacks the CV's clips fails before any training
    with pytest.raises(EdgeemoError, match="song id"):
        prepare_run_data(tmp_path / "run2", fold_config("tiny", [songs[-1]], {"data.corpus_n": 10}).data)
