"""Quadrant datasets (4Q layout): mapping, confidence, artist groups, errors, miniature and real 4q-dev."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edgeemo.data.quadrants import load_quadrants
from edgeemo.errors import DataError
from edgeemo.runtime.audio import load_audio, write_wav
from tests.data_fixtures import write_miniature_quadrants
from tests.realdata import SHARED_DATA

REAL_4Q = SHARED_DATA / "4q-dev"
HEADER = ["song", "quadrant", "pquad", "artist", "title", "moods", "genres", "file"]


def _folder(root: Path, rows: list[dict], audio: bool = True) -> Path:
    """A 4Q-style folder with short WAV files for every row naming a .wav (unless ``audio=False``)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    full = []
    for r in rows:
        r = {"pquad": "1", "artist": "", "title": "t", "moods": "m", "genres": "g", **r}
        r.setdefault("file", f"audio/{r['song']}.wav")
        if audio and r["file"].endswith(".wav"):
            write_wav(root / r["file"], 0.1 * np.ones(800, np.float32), 8000)
        full.append(r)
    with (root / "annotations.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(full)
    return root


def test_quadrant_signs_for_all_four(tmp_path: Path) -> None:
    root = _folder(tmp_path / "q", [{"song": f"s{q}", "quadrant": f"Q{q}"} for q in (1, 2, 3, 4)])
    songs = {s.id: s for s in load_quadrants(root).songs}
    assert (songs["s1"].valence, songs["s1"].arousal) == (1.0, 1.0)  # default magnitude 1
    assert (songs["s2"].valence, songs["s2"].arousal) == (-1.0, 1.0)
    assert (songs["s3"].valence, songs["s3"].arousal) == (-1.0, -1.0)
    assert (songs["s4"].valence, songs["s4"].arousal) == (1.0, -1.0)
    assert [songs[f"s{q}"].quadrant for q in (1, 2, 3, 4)] == ["Q1", "Q2", "Q3", "Q4"]
    big = {s.id: s for s in load_quadrants(root, magnitude=0.8).songs}
    assert (big["s2"].valence, big["s2"].arousal) == (-0.8, 0.8)
    with pytest.raises(DataError, match="magnitude"):
        load_quadrants(root, magnitude=1.5)


def test_confidence_scales_the_magnitude(tmp_path: Path) -> None:
    rows = [
        {"song": "a", "quadrant": "Q2", "pquad": "0.5"},
        {"song": "b", "quadrant": "Q4", "pquad": "1.5"},  # clipped to 1
        {"song": "c", "quadrant": "Q1", "pquad": "0.666666666666667"},
    ]
    root = _folder(tmp_path / "q", rows)
    plain = {s.id: s for s in load_quadrants(root, magnitude=0.5).songs}
    assert plain["a"].valence == -0.5
    conf = {s.id: s for s in load_quadrants(root, magnitude=0.5, use_confidence=True).songs}
    assert (conf["a"].valence, conf["a"].arousal) == (-0.25, 0.25)
    assert (conf["b"].valence, conf["b"].arousal) == (0.5, -0.5)
    assert conf["c"].valence == pytest.approx(1 / 3)


def test_confidence_needs_a_number(tmp_path: Path) -> None:
    root = _folder(tmp_path / "q", [{"song": "a", "quadrant": "Q1", "pquad": "high"}])
    load_quadrants(root)  # not read unless asked for
    with pytest.raises(DataError, match=r"line 2: song a: pquad 'high' is not a number"):
        load_quadrants(root, use_confidence=True)


def test_artist_groups_are_normalised(tmp_path: Path) -> None:
    rows = [
        {"song": "a", "quadrant": "Q1", "artist": "Gipsy Kings"},
        {"song": "b", "quadrant": "Q3", "artist": "  gipsy   KINGS "},
        {"song": "c", "quadrant": "Q4", "artist": "Billie Holiday"},
        {"song": "d", "quadrant": "Q4", "artist": ""},
    ]
    songs = {s.id: s for s in load_quadrants(_folder(tmp_path / "q", rows)).songs}
    assert songs["a"].group == songs["b"].group == "gipsy kings"
    assert songs["c"].group == "billie holiday"
    assert songs["d"].group == "d"


def test_bad_quadrant_names_the_line(tmp_path: Path) -> None:
    rows = [{"song": "a", "quadrant": "Q1"}, {"song": "b", "quadrant": "Q5"}]
    root = _folder(tmp_path / "q", rows)
    with pytest.raises(DataError, match=r"annotations\.csv: line 3: song b: quadrant 'Q5' is not one of Q1\.\.Q4"):
        load_quadrants(root)


def test_duplicate_song_and_missing_columns(tmp_path: Path) -> None:
    root = _folder(tmp_path / "dup", [{"song": "a", "quadrant": "Q1"}, {"song": "a", "quadrant": "Q2"}])
    with pytest.raises(DataError, match="line 3: song a appears twice"):
        load_quadrants(root)
    (tmp_path / "nocol").mkdir()
    (tmp_path / "nocol" / "annotations.csv").write_text("song,label\na,Q1\n")
    with pytest.raises(DataError, match="quadrant column"):
        load_quadrants(tmp_path / "nocol")
    with pytest.raises(DataError, match="annotation CSV is missing"):
        load_quadrants(tmp_path)


def test_missing_audio_and_audio_folder_fallback(tmp_path: Path) -> None:
    rows = [
        {"song": "a", "quadrant": "Q1"},
        {"song": "b", "quadrant": "Q2", "file": ""},  # no file cell: audio/<id>.mp3|wav
        {"song": "c", "quadrant": "Q3", "file": "audio/c.mp3"},
    ]
    root = _folder(tmp_path / "q", rows)
    write_wav(root / "audio" / "b.wav", 0.1 * np.ones(800, np.float32), 8000)
    songs = load_quadrants(root)
    assert {s.id: s.path.name for s in songs.songs} == {"a": "a.wav", "b": "b.wav"}
    assert songs.skipped == ["c: audio audio/c.mp3 is missing"]


def test_miniature_quadrant_folder(tmp_path: Path) -> None:
    root = write_miniature_quadrants(tmp_path / "mini", n_per_quadrant=2, n_artists=3, seconds=3.0)
    header = (root / "annotations.csv").read_text().splitlines()[0]
    assert header == ",".join(HEADER)
    songs = load_quadrants(root, use_confidence=True)
    assert len(songs) == 8 and not songs.skipped
    assert sorted(s.quadrant for s in songs.songs) == ["Q1", "Q1", "Q2", "Q2", "Q3", "Q3", "Q4", "Q4"]
    assert len({s.group for s in songs.songs}) == 3
    assert all(0 < abs(s.valence) <= 1.0 for s in songs.songs)
    signal = load_audio(songs.songs[0].path, 16000)
    assert 2.5 < signal.size / 16000 < 3.5


def test_run_config_sets_quadrant_targets(tmp_path: Path) -> None:
    from edgeemo.config import DataConfig, DataSource
    from edgeemo.train.rundata import load_source

    root = write_miniature_quadrants(tmp_path / "mini", n_per_quadrant=1, n_artists=2, seconds=3.0)
    source = DataSource("quadrants", str(root))
    plain = load_source(source, DataConfig())
    assert sorted({abs(s.valence) for s in plain.songs} | {abs(s.arousal) for s in plain.songs}) == [1.0]
    strong = load_source(source, DataConfig(quadrant_magnitude=0.8))
    assert {(s.id, round(s.valence / 0.8, 6)) for s in strong.songs} == {(s.id, s.valence) for s in plain.songs}


@pytest.mark.realdata
def test_real_4q_dev_annotations() -> None:
    if not (REAL_4Q / "annotations.csv").is_file():
        pytest.skip("../shared/data/4q-dev is not available")
    songs = load_quadrants(REAL_4Q)
    assert len(songs) == 600 and songs.skipped == []
    counts = {q: sum(s.quadrant == q for s in songs.songs) for q in ("Q1", "Q2", "Q3", "Q4")}
    assert counts == {"Q1": 150, "Q2": 150, "Q3": 150, "Q4": 150}
    assert len({s.group for s in songs.songs}) == 442  # artists (case-folded); split by artist
    first = next(s for s in songs.songs if s.id == "MT0000011357")
    assert (first.quadrant, first.valence, first.arousal, first.group) == ("Q2", -1.0, 1.0, "dismember")
    conf = {s.id: s for s in load_quadrants(REAL_4Q, use_confidence=True).songs}
    assert conf["MT0000011357"].valence == pytest.approx(-0.666666666666667)
    assert all(0.5 <= abs(s.valence) <= 1.0 for s in conf.values())
    signal = load_audio(first.path, 16000)  # one real file decodes: a ~30 s clip
    assert 25.0 < signal.size / 16000 < 31.0
