"""CSV manifests: round trip with the scale line, path resolution, skipped songs, and one-line DataErrors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeemo.data.manifest import read_manifest, write_manifest
from edgeemo.data.types import DynamicLabels, Song, SongSet, scale_to_unit
from edgeemo.errors import DataError
from edgeemo.runtime.audio import write_wav


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    d = tmp_path / "set"
    (d / "audio").mkdir(parents=True)
    for name in ("a", "b", "c"):
        write_wav(d / "audio" / f"{name}.wav", 0.1 * np.sin(np.arange(800) / 7.0), 8000)
    return d


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_with_scale_line(audio_dir: Path):
    rows = [
        {"path": audio_dir / "audio" / "a.wav", "valence": 1, "arousal": 9, "artist": "X"},
        {"path": audio_dir / "audio" / "b.wav", "valence": 5, "arousal": 3.5, "artist": "Y"},
        {"path": audio_dir / "audio" / "c.wav", "valence": 8.2, "arousal": 5, "artist": "X"},
    ]
    out = write_manifest(audio_dir / "manifest.csv", rows, scale=(1, 9))
    lines = out.read_text().splitlines()
    assert lines[0] == "# scale: 1 9"
    assert lines[1] == "path,valence,arousal,artist"
    assert lines[2].startswith("audio/a.wav,")  # written relative to the manifest's folder
    songs = read_manifest(out)
    assert isinstance(songs, SongSet) and len(songs) == 3 and songs.skipped == []
    assert songs.name == "manifest" and "manifest.csv" in songs.description
    for song, row in zip(songs.songs, rows, strict=True):
        assert song.path == row["path"]
        assert song.id == row["path"].stem
        assert song.valence == pytest.approx((row["valence"] - 5) / 4)
        assert song.arousal == pytest.approx((row["arousal"] - 5) / 4)
        assert song.group == row["artist"]
        assert song.source == "manifest"
    np.testing.assert_allclose(songs.targets(), [[-1.0, 1.0], [0.0, -0.375], [0.8, 0.0]], atol=1e-6)
    assert read_manifest(out, name="mine").name == "mine"


def test_round_trip_without_scale_and_with_all_columns(audio_dir: Path):
    rows = [
        {
            "path": audio_dir / "audio" / "a.wav",
            "valence": -0.5,
            "arousal": 0.25,
            "start_s": 0.01,
            "end_s": 0.09,
            "id": "song-a",
        },
        {"path": audio_dir / "audio" / "b.wav", "valence": 1.0, "arousal": -1.0, "start_s": "", "end_s": "", "id": ""},
    ]
    songs = read_manifest(write_manifest(audio_dir / "m.csv", rows))
    a, b = songs.songs
    assert (a.id, a.valence, a.arousal, a.start_s, a.end_s) == ("song-a", -0.5, 0.25, 0.01, 0.09)
    assert (b.id, b.start_s, b.end_s) == ("b", 0.0, None)
    assert a.group == "song-a" and b.group == "b"  # no artist: each song is its own group


def test_relative_paths_resolve_against_the_manifest_folder(audio_dir: Path, tmp_path: Path, monkeypatch):
    m = _write(audio_dir / "rel.csv", "path,valence,arousal\naudio/a.wav,0,0\n./audio/b.wav,0.5,0.5\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    songs = read_manifest(m)
    assert [s.path.resolve() for s in songs.songs] == [
        (audio_dir / "audio" / "a.wav").resolve(),
        (audio_dir / "audio" / "b.wav").resolve(),
    ]
    assert songs.skipped == []
    # the folder can move: relative paths follow it
    moved = tmp_path / "moved"
    audio_dir.rename(moved)
    songs = read_manifest(moved / "rel.csv")
    assert len(songs) == 2 and songs.songs[0].path.resolve() == (moved / "audio" / "a.wav").resolve()


def test_absolute_paths_outside_the_folder_are_kept(audio_dir: Path, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    write_wav(other / "z.wav", np.ones(100) * 0.1, 8000)
    m = write_manifest(audio_dir / "m.csv", [{"path": other / "z.wav", "valence": 0, "arousal": 0}])
    assert str(other / "z.wav") in m.read_text()
    assert read_manifest(m).songs[0].path == other / "z.wav"


def test_missing_audio_is_reported_in_skipped(audio_dir: Path):
    m = _write(audio_dir / "m.csv", "path,valence,arousal,id\naudio/a.wav,0,0,\naudio/gone.wav,0,0,\nnope.wav,0,0,n1\n")
    songs = read_manifest(m)
    assert [s.id for s in songs.songs] == ["a"]
    assert len(songs.skipped) == 2
    assert songs.skipped[0].startswith("gone:") and "missing" in songs.skipped[0] and "gone.wav" in songs.skipped[0]
    assert songs.skipped[1].startswith("n1:")
    # only missing files: still a SongSet, nothing silently dropped
    only = read_manifest(_write(audio_dir / "gone.csv", "path,valence,arousal\nx.wav,0,0\n"))
    assert len(only) == 0 and len(only.skipped) == 1


def test_out_of_range_without_scale_hints_at_the_scale_line(audio_dir: Path):
    m = _write(audio_dir / "m.csv", "path,valence,arousal\naudio/a.wav,0,0\naudio/b.wav,5,3\n")
    with pytest.raises(DataError) as info:
        read_manifest(m)
    msg = str(info.value)
    assert "line 3" in msg and "valence 5" in msg and "-1..1" in msg
    assert "# scale: LOW HIGH" in msg and "\n" not in msg and "m.csv" in msg
    # with the scale given as an argument, 5,3 reads fine and 0 (below 1) is the error, without the hint
    with pytest.raises(DataError, match=r"line 2: valence 0.0 outside the scale 1..9$"):
        read_manifest(m, scale=(1, 9))
    m = _write(audio_dir / "m.csv", "path,valence,arousal\naudio/b.wav,5,3\n")
    song = read_manifest(m, scale=(1, 9)).songs[0]
    assert song.valence == pytest.approx(0.0) and song.arousal == pytest.approx(-0.5)


def test_out_of_range_with_a_declared_scale_has_no_hint(audio_dir: Path):
    m = _write(audio_dir / "m.csv", "# scale: 1 9\npath,valence,arousal\naudio/a.wav,5,9.5\n")
    with pytest.raises(DataError, match=r"line 3: arousal 9.5 outside the scale 1..9") as info:
        read_manifest(m)
    assert "# scale" not in str(info.value)


def test_scale_argument_and_declared_scale(audio_dir: Path):
    body = "path,valence,arousal\naudio/a.wav,0,1\n"
    plain = _write(audio_dir / "plain.csv", body)
    song = read_manifest(plain, scale=(0, 1)).songs[0]
    assert (song.valence, song.arousal) == (-1.0, 1.0)
    declared = _write(audio_dir / "declared.csv", "# scale: 0 1\n" + body)
    assert read_manifest(declared).songs[0].valence == -1.0
    assert read_manifest(declared, scale=(0, 1)).songs[0].valence == -1.0
    with pytest.raises(DataError, match="declares scale"):
        read_manifest(declared, scale=(1, 9))
    for bad in ("# scale: 9 1", "# scale: one nine", "# scale: 1"):
        with pytest.raises(DataError, match="scale"):
            read_manifest(_write(audio_dir / "bad.csv", bad + "\n" + body))
    comma = _write(audio_dir / "comma.csv", "# Scale: 0, 1\n" + body)
    assert read_manifest(comma).songs[0].arousal == 1.0


def test_non_numeric_labels_name_the_line(audio_dir: Path):
    m = _write(audio_dir / "m.csv", "# scale: 1 9\npath,valence,arousal\naudio/a.wav,5,5\naudio/b.wav,5,high\n")
    with pytest.raises(DataError, match=r"m\.csv: line 4: arousal 'high' is not a number"):
        read_manifest(m)
    # line numbers count the file's lines, blank lines included
    m = _write(audio_dir / "m.csv", "path,valence,arousal\naudio/a.wav,0,0\n\naudio/b.wav,x,0\n")
    with pytest.raises(DataError, match=r"line 4: valence 'x'"):
        read_manifest(m)
    m = _write(audio_dir / "m.csv", "path,valence,arousal\naudio/a.wav,nan,0\n")
    with pytest.raises(DataError, match=r"line 2: valence is nan"):
        read_manifest(m)
    m = _write(audio_dir / "m.csv", "path,valence,arousal\naudio/a.wav,0.5\n")  # a short row
    with pytest.raises(DataError, match=r"line 2: 2 field\(s\), the header has 3"):
        read_manifest(m)


def test_missing_columns(audio_dir: Path):
    m = _write(audio_dir / "m.csv", "file,valence\naudio/a.wav,0\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) path, arousal") as info:
        read_manifest(m)
    assert "\n" not in str(info.value)
    # header cells are trimmed, and a UTF-8 BOM is ignored
    m = audio_dir / "bom.csv"
    m.write_bytes("\ufeffpath , valence,arousal \naudio/a.wav,0.1,0.2\n".encode())
    assert read_manifest(m).songs[0].arousal == pytest.approx(0.2)


def test_start_end_and_artist(audio_dir: Path):
    text = (
        "path,valence,arousal,start_s,end_s,artist\n"
        "audio/a.wav,0,0,1.5,31.5,Band\n"
        "audio/b.wav,0,0,,,\n"
        "audio/c.wav,0,0,2,,Band\n"
    )
    songs = read_manifest(_write(audio_dir / "m.csv", text)).songs
    assert [(s.start_s, s.end_s, s.group) for s in songs] == [
        (1.5, 31.5, "Band"),
        (0.0, None, "b"),
        (2.0, None, "Band"),
    ]
    with pytest.raises(DataError, match=r"line 2: end_s 1.0 is not after start_s 2.0"):
        read_manifest(_write(audio_dir / "bad.csv", "path,valence,arousal,start_s,end_s\naudio/a.wav,0,0,2,1\n"))
    with pytest.raises(DataError, match=r"line 2: start_s 'soon' is not a number"):
        read_manifest(_write(audio_dir / "bad.csv", "path,valence,arousal,start_s\naudio/a.wav,0,0,soon\n"))


def test_missing_and_empty_manifests(audio_dir: Path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(audio_dir / "nope.csv")
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(audio_dir)
    with pytest.raises(DataError, match="no rows"):
        read_manifest(_write(audio_dir / "empty.csv", "# scale: 1 9\npath,valence,arousal\n"))
    with pytest.raises(DataError, match="lacks column"):
        read_manifest(_write(audio_dir / "blank.csv", ""))


# --- the record types ---------------------------------------------------------------------------
def test_scale_to_unit():
    np.testing.assert_allclose(scale_to_unit([1, 5, 9, 3], 1, 9), [-1, 0, 1, -0.5])
    np.testing.assert_allclose(scale_to_unit([0, 0.5, 1], 0, 1), [-1, 0, 1])
    with pytest.raises(DataError):
        scale_to_unit(1.0, 2, 2)


def test_song_validation_and_group_default(tmp_path: Path):
    s = Song(id="s1", path=tmp_path / "x.wav", valence=0.5, arousal=-1.0)
    assert s.group == "s1"
    assert Song(id="s2", path=tmp_path, valence=0, arousal=0, group="G").group == "G"
    for bad in (1.01, -1.5, float("nan")):
        with pytest.raises(DataError, match="outside"):
            Song(id="s", path=tmp_path, valence=bad, arousal=0.0)
    with pytest.raises(DataError, match="differ in length"):
        DynamicLabels(np.arange(3.0), np.zeros(3), np.zeros(2))
    dyn = DynamicLabels(np.array([0.0, 0.5, 1.0, 1.5]), np.array([0.1, 0.2, 0.3, 0.4]), np.array([-1.0, 0, 0, 1]))
    assert dyn.mean_between(0.5, 1.5) == pytest.approx((0.25, 0.0))
    assert dyn.mean_between(2.0, 3.0) is None
    a = SongSet("a", [s], "first", ["x: missing"])
    b = SongSet("b", [s], "", ["y: missing"])
    both = a + b
    assert both.name == "a+b" and len(both) == 2 and both.skipped == ["x: missing", "y: missing"]
    assert both.description == "first"
    assert both.targets().shape == (2, 2) and SongSet("e", []).targets().shape == (0, 2)
