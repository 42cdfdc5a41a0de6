"""train-all and export with a musicnn-token teacher (teacher.arch musicnn_token_vit), end to end on miniature data."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeemo.config import DataSource  # noqa: E402
from edgeemo.errors import TrainingError  # noqa: E402
from edgeemo.exporting.export import export_run  # noqa: E402
from edgeemo.runtime.audio import write_wav  # noqa: E402
from edgeemo.train import hybrid_stages  # noqa: E402
from edgeemo.train.pipeline import open_run, train_all  # noqa: E402
from tests.data_fixtures import synth_clip, write_miniature_quadrants  # noqa: E402
from tests.train_fixtures import tiny_config  # noqa: E402

PREFLIGHT = hybrid_stages.preflight  # the real one: the run fixture replaces it while the module's tests run
LOOSE = {"int8": True, "calibration": 16, "min_compression": 0.0, "min_retention": -10.0, "max_int8_drop": 1.0}


@pytest.fixture(scope="module")
def musicnn():
    from tests.train_fixtures import random_musicnn

    return random_musicnn()


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory, musicnn):
    root = tmp_path_factory.mktemp("hybrid_run")
    quads = write_miniature_quadrants(root / "mini4q", n_per_quadrant=3, n_artists=8, seconds=5.0)
    unlabeled = root / "unlabeled"
    unlabeled.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        write_wav(unlabeled / f"u{i}.wav", synth_clip(0.5 - i * 0.4, 0.2, 24.0, 16000, rng), 16000)
    cfg = tiny_config(gan_ratio=0.0, student_epochs=2).replace(
        {
            "data.sources": [DataSource("quadrants", str(quads)).to_dict()],
            "teacher.arch": "musicnn_token_vit",
            "teacher.depth": 1,
            "teacher.epochs": 2,
            "teacher.views": 2,
            "teacher.batch_size": 8,
            "teacher.accum_steps": 1,
            "student.unlabeled": [str(unlabeled)],
            "student.unlabeled_max_windows": 5,
            "student.feature_weight": 0.0,
            "student.mixes": 1,
        }
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(hybrid_stages, "musicnn_front_end", lambda weights=None: (musicnn, "test-weights"))
    mp.setattr(hybrid_stages, "preflight", lambda teacher, student: None)  # no weights file: the net is random
    r = open_run(root / "runs" / "hyb", cfg)
    summary = train_all(r, progress=False, cache_dir=root / "cache")
    yield r, root, summary, mp
    mp.undo()


def test_train_all_trains_the_token_teacher_and_its_student(hybrid_run):
    r, root, summary, _ = hybrid_run
    assert summary["test"]["teacher"]["arch"] == "musicnn_token_vit"
    assert summary["test"]["student"]["arch"] == "mobilevit_xxs"
    assert np.isfinite(summary["test"]["teacher"]["ccc_mean"]) and np.isfinite(summary["test"]["student"]["ccc_mean"])
    # every training song in 2 views and 1 mixed view, cached once per file and view (the student reuses the
    # teacher's views), the validation and test songs as they are, the unlabeled files; a log-mel and a token
    # entry each
    split = json.loads((r.dir / "split.json").read_text())
    n_files = 3 * len(split["train"]) + len(split["val"]) + len(split["test"]) + 3
    for stream in ("mel", "tokens"):
        assert len(list((root / "cache" / "views").glob(f"{stream}-*.npz"))) == n_files
    ck = torch.load(r.dir / "student" / "best.pt", map_location="cpu", weights_only=False)
    assert ck["stage"] == "student" and ck["feature_config"] == r.cfg.features.to_dict()


def test_a_resumed_run_retrains_nothing(hybrid_run):
    r, root, summary, _ = hybrid_run
    again = train_all(open_run(r.dir, None), progress=False, cache_dir=root / "cache")
    assert again["test"]["teacher"] == summary["test"]["teacher"]
    assert again["test"]["student"] == summary["test"]["student"]


def test_export_measures_the_token_teacher_with_its_front_end(hybrid_run, tmp_path, monkeypatch):
    r, root, summary, _ = hybrid_run
    card = export_run(r.dir, tmp_path / "bundle", overrides=LOOSE)
    vit, front = r.dir / "export" / "teacher.onnx", r.dir / "export" / "teacher_frontend.onnx"
    assert vit.is_file() and front.is_file()
    assert card["compression"]["teacher_fp32_onnx_bytes"] == vit.stat().st_size + front.stat().st_size
    assert card["models"]["teacher"]["params"] > summary["test"]["teacher"]["params"] + 400_000  # + front end
    # the export scores the teacher on the test windows as train-all did
    assert card["metrics"]["teacher_torch"]["ccc_mean"] == pytest.approx(
        summary["test"]["teacher"]["ccc_mean"], abs=1e-6
    )
    assert "unlabeled" in card["training_data"]["licence"] and "musicnn" in card["training_data"]["licence"]
    # the CV's recipe system scores the held-out songs with this teacher and with the bundle
    from edgeemo.train.cv_recipe import score_songs
    from edgeemo.train.rundata import prepare_run_data

    songs = prepare_run_data(r.dir, r.cfg.data).splits["test"]
    monkeypatch.setenv("EDGEEMO_CACHE", str(root / "cache"))
    for role in ("teacher", "int8", "fp32"):
        scores = score_songs(r.dir, tmp_path / "bundle", songs, role)
        assert scores.shape == (len(songs), 2) and np.all(np.abs(scores) <= 1)


def test_bench_times_the_token_teacher_on_token_windows(hybrid_run, tmp_path):
    from edgeemo.bench import run_bench

    r, _, summary, _ = hybrid_run
    bundle = tmp_path / "bundle"
    export_run(r.dir, bundle, overrides=LOOSE)
    rows = run_bench(bundle, run_dir=r.dir, runs=50)["rows"]
    (label,) = [k for k in rows if k.startswith("teacher torch fp32")]
    assert "token ViT" in label and rows[label]["params"] == summary["test"]["teacher"]["params"]
    front_end = (r.dir / "export" / "teacher_frontend.onnx").stat().st_size
    assert rows[label]["file_mb"] * 1e6 == (r.dir / "export" / "teacher.onnx").stat().st_size + front_end
    assert rows[label]["latency_ms_median"] > 0 and rows["student torch fp32"]["latency_ms_median"] > 0


def test_excerpt_songs_are_refused(hybrid_run):
    import dataclasses

    from edgeemo.config import StageContext
    from edgeemo.data.types import Song

    r, root, _, _ = hybrid_run
    song = Song("x", root / "mini4q" / "audio" / "missing.mp3", 0.5, 0.5, start_s=2.0)
    with pytest.raises(TrainingError, match="whole-file songs"):
        hybrid_stages.song_views([dataclasses.replace(song)], StageContext(r.cfg.features), 1, root / "cache", False)


def test_missing_musicnn_weights_or_unlabeled_folder_fail_before_training(tmp_path, monkeypatch):
    from edgeemo.recipes import recipe_config

    cfg = recipe_config("4q-hybrid").replace({"student.unlabeled": ["$EDGEEMO_CACHE/unlabeled/debian-xl"]})
    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(TrainingError, match="import-musicnn"):
        PREFLIGHT(cfg.teacher, cfg.student)
    weights = tmp_path / "empty-cache" / "pretrained" / "MSD_musicnn.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    with pytest.raises(TrainingError, match=r"build_unlabeled_corpus\.sh"):
        PREFLIGHT(cfg.teacher, cfg.student)
    (tmp_path / "empty-cache" / "unlabeled" / "debian-xl").mkdir(parents=True)
    PREFLIGHT(cfg.teacher, cfg.student)


def test_crossfit_targets_come_from_teachers_that_never_heard_the_song_or_its_artist(hybrid_run, tmp_path, monkeypatch):
    from pathlib import Path

    from edgeemo.config import StageContext
    from edgeemo.data.quadrants import load_quadrants

    r, root, _, _ = hybrid_run
    songs = load_quadrants(root / "mini4q").songs
    ctx = StageContext(r.cfg.features)
    trained_on: list[set[Path]] = []

    def fake_fit(fit_on, val, out_dir, settings, **kwargs):  # the "model" is the part's number
        trained_on.append({Path(p) for p in fit_on.items})
        return len(trained_on) - 1, None

    monkeypatch.setattr(hybrid_stages, "train_token_teacher", fake_fit)
    monkeypatch.setattr(
        hybrid_stages, "token_teacher_outputs", lambda model, data, device="auto": np.full((len(data), 2), model, float)
    )
    data = hybrid_stages.song_views(songs, ctx, 1, root / "cache", False)
    out = hybrid_stages.crossfit_outputs(songs, data, data, r.cfg.teacher, ctx, 3, tmp_path, root / "cache", False)
    assert len(trained_on) == 3 and not np.isnan(out).any()
    part_of_song = {}
    for item, part in zip(data.item_of(), out[:, 0].astype(int), strict=True):
        assert part_of_song.setdefault(item, part) == part  # every window of a song from one teacher
    for item, part in part_of_song.items():
        assert songs[item].path not in trained_on[part]  # ...which never trained on it
        heard = {s.group for s in songs if s.path in trained_on[part]}
        assert songs[item].group not in heard  # nor on its artist
        assert len(trained_on[part]) + sum(p == part for p in part_of_song.values()) == len(songs)
    with pytest.raises(TrainingError, match="at least 2"):
        hybrid_stages.crossfit_outputs(songs, data, data, r.cfg.teacher, ctx, 1, tmp_path, root / "cache", False)
