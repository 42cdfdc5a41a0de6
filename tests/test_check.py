"""Dataset detection, load_dataset dispatch, check_dataset reports and the ``edgeemo data check`` CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeemo.cli import main
from edgeemo.data.check import check_dataset, detect_kind, load_dataset
from edgeemo.data.deam import STATIC_DIR, STATIC_FILES
from edgeemo.data.manifest import write_manifest
from edgeemo.errors import DataError
from edgeemo.runtime.audio import write_wav
from tests.data_fixtures import write_miniature_deam, write_miniature_quadrants
from tests.realdata import SHARED_DATA

REAL = SHARED_DATA


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("templates")
    deam = write_miniature_deam(base / "deam", n_songs=6, seconds=16.0)
    quads = write_miniature_quadrants(base / "quads", n_per_quadrant=2, n_artists=3, seconds=2.0)
    (base / "manifest").mkdir()
    rows = []
    for i in range(3):
        write_wav(base / "manifest" / f"c{i}.wav", 0.1 * np.sin(np.arange(8000) / (5 + i)), 8000)
        rows.append({"path": base / "manifest" / f"c{i}.wav", "valence": i + 1, "arousal": 3 - i, "artist": "x"})
    rows.append({"path": base / "manifest" / "gone.wav", "valence": 2, "arousal": 2})
    write_manifest(base / "manifest" / "manifest.csv", rows, scale=(1, 3))
    return {"deam": deam, "quadrants": quads, "manifest": base / "manifest"}


@pytest.fixture
def data(templates: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Fresh copies per test (some tests break them)."""
    return {k: Path(shutil.copytree(v, tmp_path / k)) for k, v in templates.items()}


def test_detect_kind_folders_and_files(data: dict[str, Path], tmp_path: Path) -> None:
    assert detect_kind(data["deam"]) == "deam"
    assert detect_kind(data["deam"] / STATIC_DIR / STATIC_FILES[0]) == "deam"
    assert detect_kind(data["quadrants"]) == "quadrants"
    assert detect_kind(data["quadrants"] / "annotations.csv") == "quadrants"
    assert detect_kind(data["manifest"]) == "manifest"
    assert detect_kind(data["manifest"] / "manifest.csv") == "manifest"
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in STATIC_FILES:
        shutil.copy(data["deam"] / STATIC_DIR / name, flat / name)
    assert detect_kind(flat) == "deam"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell what dataset this is: expected"):
        detect_kind(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file or folder"):
        detect_kind(tmp_path / "nowhere")


def test_load_dataset_dispatches(data: dict[str, Path]) -> None:
    assert len(load_dataset(data["deam"])) == 6
    assert load_dataset(data["deam"] / STATIC_DIR / STATIC_FILES[1]).name == "deam"  # a static CSV -> its tree
    assert len(load_dataset(data["quadrants"], magnitude=0.8).songs) == 8
    assert load_dataset(data["quadrants"], magnitude=0.8).songs[0].valence == 0.8
    manifest = load_dataset(data["manifest"] / "manifest.csv")
    assert len(manifest) == 3 and len(manifest.skipped) == 1
    assert len(load_dataset(data["deam"], kind="deam", require_audio=False)) == 6
    with pytest.raises(DataError, match="unknown dataset kind 'pmemo'"):
        load_dataset(data["deam"], kind="pmemo")


def test_check_deam(data: dict[str, Path]) -> None:
    report = check_dataset(data["deam"])
    assert report.ok and report.kind == "deam"
    assert (report.n_songs, report.n_skipped, report.n_dynamic, report.n_groups) == (6, 0, 6, 6)
    assert report.duration_min_s == pytest.approx(16.0, abs=0.2)
    assert report.duration_max_s == pytest.approx(26.0, abs=0.2)  # the two ids >= 2001 are longer "full songs"
    assert report.total_hours == pytest.approx((4 * 16 + 21 + 26) / 3600, rel=0.02)
    lo, hi, mean = report.valence_range
    assert -1 <= lo <= mean <= hi <= 1
    assert report.quadrant_counts is None
    text = report.text()
    assert "6 usable" in text and "dynamic labels: 6 songs" in text and "status: OK" in text


def test_check_quadrants_and_manifest(data: dict[str, Path]) -> None:
    report = check_dataset(data["quadrants"])
    assert report.ok and report.kind == "quadrants"
    assert report.quadrant_counts == {"Q1": 2, "Q2": 2, "Q3": 2, "Q4": 2}
    assert report.n_groups == 3 and report.n_dynamic == 0
    assert "quadrants: Q1 2, Q2 2, Q3 2, Q4 2" in report.text()
    report = check_dataset(data["manifest"])
    assert report.ok and report.kind == "manifest"
    assert (report.n_songs, report.n_skipped, report.n_groups) == (3, 1, 1)  # all three by artist "x"
    assert report.valence_range == pytest.approx((-1.0, 1.0, 0.0))
    assert report.duration_median_s == pytest.approx(1.0)
    assert "gone.wav is missing" in report.text()


def test_all_audio_missing_is_not_ok(data: dict[str, Path]) -> None:
    shutil.rmtree(data["deam"] / "MEMD_audio")
    report = check_dataset(data["deam"])
    assert not report.ok
    assert (report.n_songs, report.n_skipped) == (0, 6)
    text = report.text()
    assert "NOT OK (no usable songs)" in text and "annotations only" in text
    assert "2: audio MEMD_audio/2.mp3 is missing" in text


def test_unreadable_audio_is_a_problem(data: dict[str, Path]) -> None:
    path = next(data["quadrants"].glob("audio/*"))
    path.write_bytes(b"this is not audio at all" * 10)
    report = check_dataset(data["quadrants"])
    assert not report.ok and report.n_songs == 8 and len(report.problems) == 1
    assert report.problems[0].startswith(f"{path.stem}: ")
    assert "NOT OK (1 audio file(s) will not open)" in report.text()


def test_long_lists_are_cut(tmp_path: Path) -> None:
    root = write_miniature_deam(tmp_path / "d", n_songs=14, seconds=1.0, with_dynamic=False)
    shutil.rmtree(root / "MEMD_audio")
    text = check_dataset(root).text()
    assert "skipped (14):" in text and "... and 4 more" in text
    assert text.count("is missing") == 10


def test_cli_data_check(data: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["data", "check", str(data["deam"])])
    assert result.exit_code == 0, result.output
    assert "songs: 6 usable" in result.output
    shutil.rmtree(data["quadrants"] / "audio")
    result = runner.invoke(main, ["data", "check", str(data["quadrants"])])
    assert result.exit_code == 1 and "NOT OK" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["data", "check", str(tmp_path / "empty")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot tell what dataset this is" in lines[0]


@pytest.mark.realdata
def test_check_real_data() -> None:
    if not (REAL / "4q-dev" / "annotations.csv").is_file() or not (REAL / "deam-annotations").is_dir():
        pytest.skip("../shared/data is not available")
    report = check_dataset(REAL / "4q-dev")  # header reads only: cheap even for 600 MP3s
    assert report.ok and report.n_songs == 600 and report.n_groups == 442
    assert 4.5 < report.total_hours < 5.5
    assert 25.0 < report.duration_min_s <= report.duration_max_s < 31.0
    report = check_dataset(REAL / "deam-annotations")
    assert report.kind == "deam" and not report.ok and report.n_skipped == 1802
