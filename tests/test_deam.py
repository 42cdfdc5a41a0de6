"""DEAM loader: the real file format (miniature tree), label mapping, dynamic labels, errors, real CSVs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeemo.data.deam import (
    DYNAMIC_DIR,
    STATIC_DIR,
    STATIC_FILES,
    load_deam,
)
from edgeemo.errors import DataError
from edgeemo.runtime.audio import audio_info, load_audio, write_wav
from tests.data_fixtures import write_miniature_deam
from tests.realdata import SHARED_DATA

REAL = SHARED_DATA
REAL_DEAM = REAL / "deam-annotations"


def _static(root: Path, which: int = 0) -> Path:
    return root / STATIC_DIR / STATIC_FILES[which]


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    return rows[0], rows[1:]


def _rewrite_rows(path: Path, rows: list[list[str]]) -> None:
    header = path.read_bytes().split(b"\r\n", 1)[0].decode()
    path.write_bytes(("\r\n".join([header, *(",".join(r) for r in rows)]) + "\r\n").encode())


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_miniature_deam(tmp_path_factory.mktemp("deam") / "deam", n_songs=6, seconds=18.0)


@pytest.fixture
def mini(_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the miniature tree per test (tests edit it)."""
    return Path(shutil.copytree(_template, tmp_path / "deam"))


def test_miniature_tree_is_in_the_real_format(mini: Path) -> None:
    header_1 = _static(mini, 0).read_bytes().split(b"\r\n")[0].decode()
    header_2 = _static(mini, 1).read_bytes().split(b"\r\n")[0].decode()
    assert header_1 == "song_id, valence_mean, valence_std, arousal_mean, arousal_std"
    assert header_2.startswith("song_id, valence_mean, valence_std, valence_ max_mean,")
    assert len(header_2.split(",")) == 13
    _, rows_2 = _read_rows(_static(mini, 1))
    assert rows_2 and all(int(r[0]) >= 2000 and len(r) == 13 for r in rows_2)
    dyn_header, dyn_rows = _read_rows(mini / DYNAMIC_DIR / "valence.csv")
    assert dyn_header[:3] == ["song_id", "sample_15000ms", "sample_15500ms"]
    assert len({len(r) for r in dyn_rows}) > 1  # ragged rows
    assert any(r[-1] == "" for r in dyn_rows)  # trailing empty cells
    audio = sorted((mini / "MEMD_audio").iterdir())
    assert len(audio) == 6
    sr, dur, _ = audio_info(audio[0])
    assert sr == 16000 and dur > 15.0


def test_round_trip_maps_static_labels(mini: Path) -> None:
    expected = {}
    for which in (0, 1):
        reader = csv.DictReader(_static(mini, which).read_text().splitlines())
        for row in reader:
            expected[row["song_id"]] = ((float(row[" valence_mean"]) - 5) / 4, (float(row[" arousal_mean"]) - 5) / 4)
    songs = load_deam(mini)
    assert songs.skipped == []
    assert [s.id for s in songs.songs] == sorted(expected, key=int)
    for s in songs.songs:
        assert (s.valence, s.arousal) == pytest.approx(expected[s.id])
        assert s.group == s.id and s.source == "deam"
        assert s.path == mini / "MEMD_audio" / f"{s.id}{s.path.suffix}" and s.path.is_file()
    assert songs.description == "DEAM (6 songs, static 1..9 -> [-1,1], dynamic 2 Hz for 6 songs)"
    signal = load_audio(songs.songs[0].path, 16000)
    assert 17.0 < signal.size / 16000 < 19.0


def test_exact_values_and_leading_space_headers(mini: Path) -> None:
    _rewrite_rows(_static(mini, 0), [["2", "1", "0.5", "9", "0.4"], ["5", "5", "1", "3.1", "1.2"]])
    songs = {s.id: s for s in load_deam(mini).songs}
    assert (songs["2"].valence, songs["2"].arousal) == (-1.0, 1.0)
    assert songs["5"].valence == 0.0
    assert songs["5"].arousal == pytest.approx(-0.475)
    assert "8" not in songs  # rows are what the CSV says, nothing invented


def test_dynamic_labels_times_and_values(mini: Path) -> None:
    _, rows = _read_rows(mini / DYNAMIC_DIR / "valence.csv")
    csv_values = {r[0]: [float(c) for c in r[1:] if c] for r in rows}
    songs = load_deam(mini)
    lengths = set()
    for s in songs.songs:
        d = s.dynamic
        assert d is not None
        assert d.times[0] == 15.0
        assert np.allclose(np.diff(d.times), 0.5)
        assert d.valence == pytest.approx(csv_values[s.id])  # real DEAM dynamic labels are already in [-1, 1]
        assert np.all(np.abs(d.arousal) <= 1.0)
        lengths.add(len(d.times))
    assert len(lengths) > 1
    short = next(s for s in songs.songs if s.id == "2")
    assert short.dynamic.times[-1] == 17.5  # 18 s clip: 15.0 .. 17.5 at 2 Hz
    assert load_deam(mini, dynamic=False).songs[0].dynamic is None


def test_dynamic_scale_option_and_range_check(mini: Path) -> None:
    path = mini / DYNAMIC_DIR / "arousal.csv"
    header = path.read_text().splitlines()[0]
    path.write_text(f"{header}\n2,1,5,9\n")
    (mini / DYNAMIC_DIR / "valence.csv").write_text(f"{header}\n2,9,5,1\n")
    songs = {s.id: s for s in load_deam(mini, dynamic_scale=(1.0, 9.0)).songs}
    d = songs["2"].dynamic
    assert list(d.times) == [15.0, 15.5, 16.0]
    assert list(d.arousal) == [-1.0, 0.0, 1.0] and list(d.valence) == [1.0, 0.0, -1.0]
    assert songs["5"].dynamic is None
    with pytest.raises(DataError, match=r"valence\.csv: line 2: song 2: dynamic value 9 at 15 s is outside -1\.\.1"):
        load_deam(mini)


def test_missing_audio_is_reported_not_dropped(mini: Path) -> None:
    next((mini / "MEMD_audio").glob("5.*")).unlink()
    songs = load_deam(mini)
    assert [s.id for s in songs.songs] == ["2", "8", "11", "2001", "2002"]
    assert songs.skipped == ["5: audio MEMD_audio/5.mp3 is missing"]
    kept = {s.id: s for s in load_deam(mini, require_audio=False).songs}
    assert len(kept) == 6 and kept["5"].path == mini / "MEMD_audio" / "5.mp3"


def test_wav_audio_is_accepted(mini: Path) -> None:
    for p in (mini / "MEMD_audio").glob("8.*"):
        p.unlink()
    write_wav(mini / "MEMD_audio" / "8.wav", np.zeros(1600, np.float32), 16000)
    songs = {s.id: s for s in load_deam(mini).songs}
    assert songs["8"].path.name == "8.wav"


def test_missing_static_csv_names_the_path(mini: Path) -> None:
    _static(mini, 1).unlink()
    with pytest.raises(DataError) as info:
        load_deam(mini)
    assert str(_static(mini, 1)) in str(info.value)
    _static(mini, 0).unlink()
    with pytest.raises(DataError) as info:
        load_deam(mini)
    assert str(_static(mini, 0)) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("cell", "pattern"), [("10", "valence_mean 10 is outside 1..9"), ("nan", "valence_mean is nan")]
)
def test_bad_label_names_file_and_song(mini: Path, cell: str, pattern: str) -> None:
    _rewrite_rows(_static(mini, 0), [["2", "5", "1", "5", "1"], ["5", cell, "1", "5", "1"]])
    with pytest.raises(DataError, match=pattern) as info:
        load_deam(mini)
    message = str(info.value)
    assert STATIC_FILES[0] in message and "song 5" in message and "line 3" in message


def test_later_static_file_wins_for_duplicates(mini: Path) -> None:
    path = _static(mini, 1)
    _, rows = _read_rows(path)
    dup = ["2", "9", "0.5", "9", "0.5", "9", "0.5", "1", "0.5", "1", "0.5", "1", "0.5"]
    _rewrite_rows(path, [*rows, dup])
    songs = load_deam(mini)
    assert len(songs) == 6
    s2 = next(s for s in songs.songs if s.id == "2")
    assert (s2.valence, s2.arousal) == (1.0, -1.0)


@pytest.mark.parametrize("layout", ["flat", "annotations"])
def test_annotations_only_folder(mini: Path, tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "only" if layout == "flat" else tmp_path / "only" / "annotations"
    folder.mkdir(parents=True)
    for which in (0, 1):
        shutil.copy(_static(mini, which), folder / STATIC_FILES[which])
    songs = load_deam(tmp_path / "only", require_audio=False)
    assert len(songs) == 6 and not songs.skipped
    assert all(s.dynamic is None for s in songs.songs)
    assert len(load_deam(tmp_path / "only").skipped) == 6


def test_miniature_needs_time_for_dynamic_labels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="15"):
        write_miniature_deam(tmp_path / "x", seconds=10.0)
    root = write_miniature_deam(tmp_path / "y", n_songs=2, seconds=4.0, with_dynamic=False)
    songs = load_deam(root)
    assert len(songs) == 2 and all(s.dynamic is None for s in songs.songs)


@pytest.mark.realdata
def test_real_deam_static_annotations() -> None:
    if not (REAL_DEAM / STATIC_FILES[0]).is_file():
        pytest.skip("../shared/data/deam-annotations is not available")
    songs = load_deam(REAL_DEAM, require_audio=False)
    assert len(songs) == 1802
    by_id = {s.id: s for s in songs.songs}
    assert (by_id["2"].valence, by_id["2"].arousal) == pytest.approx((-0.475, -0.5))
    assert (by_id["2001"].valence, by_id["2001"].arousal) == pytest.approx((-0.45, 0.4))
    assert (by_id["2058"].valence, by_id["2058"].arousal) == pytest.approx((-0.3, 0.2))
    assert sum(int(i) > 2000 for i in by_id) == 58
    targets = songs.targets()
    assert targets.min() >= -1.0 and targets.max() <= 1.0
    assert all(s.dynamic is None for s in songs.songs)
    with_audio = load_deam(REAL_DEAM)
    assert len(with_audio) == 0 and len(with_audio.skipped) == 1802
