"""Group-wise song splits, and mel windows built from audio files (feature cache, dynamic targets, failures)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import edgeemo.data.windows as windows_mod
from edgeemo.data.split import SPLITS, split_songs
from edgeemo.data.types import DynamicLabels, Song, SongSet
from edgeemo.data.windows import WindowSet, build_windows, song_frames
from edgeemo.errors import AudioError, DataError
from edgeemo.features import FeatureConfig, frame_windows, log_mel, pad_to_window
from edgeemo.runtime.audio import load_audio, write_wav

CFG = FeatureConfig()  # 16 kHz, 64 x 128 frames, a window every 16 frames (0.5 s), 4.03 s per window


# --- split_songs ----------------------------------------------------------------------------------
def _songset(group_sizes: list[int], name: str = "set") -> SongSet:
    songs = []
    for g, size in enumerate(group_sizes):
        for k in range(size):
            songs.append(Song(id=f"g{g}s{k}", path=Path(f"/nowhere/g{g}s{k}.wav"), valence=0, arousal=0, group=f"A{g}"))
    return SongSet(name, songs)


def _ids(split: dict[str, list[Song]]) -> dict[str, list[str]]:
    return {k: [s.id for s in v] for k, v in split.items()}


def test_split_is_deterministic_per_seed():
    songs = _songset([1, 3, 2, 1, 1, 4, 2, 2, 1, 3, 1, 1, 2, 2, 1])
    a = split_songs(songs, seed=7)
    assert _ids(a) == _ids(split_songs(songs, seed=7))
    assert any(_ids(split_songs(songs, seed=s)) != _ids(a) for s in range(8, 12))
    assert set(a) == set(SPLITS)


@pytest.mark.parametrize("seed", range(5))
def test_no_group_in_two_splits_and_every_song_once(seed: int):
    sizes = [1, 5, 2, 3, 1, 1, 4, 2, 2, 1, 3, 1, 1, 2, 6, 1, 1, 2, 1, 3]
    songs = _songset(sizes)
    split = split_songs(songs, seed=seed)
    owner: dict[str, str] = {}
    for name, members in split.items():
        assert members, f"{name} is empty"
        for s in members:
            assert owner.setdefault(s.group, name) == name, f"group {s.group} in {owner[s.group]} and {name}"
    all_ids = [s.id for v in split.values() for s in v]
    assert sorted(all_ids) == sorted(s.id for s in songs.songs) and len(set(all_ids)) == len(all_ids)
    counts = Counter(s.group for s in split["train"])
    assert all(counts[f"A{g}"] == sizes[g] for g in range(len(sizes)) if owner[f"A{g}"] == "train")


def test_adding_a_dataset_never_moves_another_datasets_songs():
    import dataclasses

    a = _songset([1, 2, 1, 3, 1, 1, 2, 1, 1, 1, 2, 1], name="a")
    b = SongSet("b", [dataclasses.replace(s, id=f"b{s.id}", group=f"B{s.group}", source="b") for s in a.songs])
    tiny = SongSet("t", [dataclasses.replace(s, id=f"t{s.id}", source="t") for s in a.songs[:3]])  # 2 groups
    alone = _ids(split_songs(a, seed=3))
    mixed = _ids(split_songs(a + b + tiny, seed=3))
    for k in SPLITS:
        assert [i for i in mixed[k] if not i.startswith(("b", "t"))] == alone[k]
        assert [i[1:] for i in mixed[k] if i.startswith("b")] == alone[k]  # same fractions and seed per dataset
    assert {i for i in mixed["train"] if i.startswith("t")} == {s.id for s in tiny.songs}  # < 3 groups: train


def test_split_respects_fractions_roughly():
    songs = _songset([1] * 100)
    split = split_songs(songs, fractions=(0.7, 0.15, 0.15), seed=1)
    assert [len(split[k]) for k in SPLITS] == [70, 15, 15]
    uneven = _songset([1, 2, 3] * 20)  # 120 songs in 60 groups of 1-3
    for seed in range(3):
        n = {k: len(v) for k, v in split_songs(uneven, fractions=(0.6, 0.2, 0.2), seed=seed).items()}
        assert sum(n.values()) == 120
        assert 18 <= n["val"] <= 24 and 18 <= n["test"] <= 24 and 72 <= n["train"] <= 84
    # fractions are normalised
    assert _ids(split_songs(songs, fractions=(7, 1.5, 1.5), seed=1)) == _ids(split)


def test_split_needs_three_groups_and_valid_fractions():
    with pytest.raises(DataError, match="2 group"):
        split_songs(_songset([10, 10], name="duo"))
    with pytest.raises(DataError, match="'duo'"):
        split_songs(_songset([10, 10], name="duo"))
    with pytest.raises(DataError, match="0 group"):
        split_songs(_songset([]))
    three = split_songs(_songset([1, 1, 1]))
    assert sorted(len(v) for v in three.values()) == [1, 1, 1]
    for bad in ((0.7, 0.3), (0.7, 0.3, 0.0), (1.0, -0.1, 0.1)):
        with pytest.raises(DataError, match="fractions"):
            split_songs(_songset([1] * 10), fractions=bad)


# --- build_windows ---------------------------------------------------------------------------------
def _tone_song(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    f = 220.0 * (1 + seed)
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def wav_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wavs")
    write_wav(d / "six.wav", _tone_song(6.0, 0), 16000)
    write_wav(d / "five_22k.wav", _tone_song(5.0, 1, sr=22050), 22050)  # resampled on load
    write_wav(d / "short.wav", _tone_song(1.0, 2), 16000)
    (d / "corrupt.wav").write_bytes(np.random.default_rng(9).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return d


def _song(d: Path, name: str, v: float = 0.1, a: float = -0.2, **kw) -> Song:
    return Song(id=name, path=d / f"{name}.wav", valence=v, arousal=a, **kw)


def _raw_frames(song: Song, cfg: FeatureConfig = CFG) -> np.ndarray:
    signal = load_audio(song.path, cfg.sample_rate, start_s=song.start_s, end_s=song.end_s)
    return log_mel(pad_to_window(signal, cfg)[0], cfg)


def _expected_frames(song: Song, cfg: FeatureConfig = CFG) -> np.ndarray:
    """song_frames rounds fresh features to float16 (the cache's precision), so cached and fresh runs agree."""
    raw = _raw_frames(song, cfg)
    rounded = raw.astype(np.float16).astype(np.float32)
    assert np.abs(rounded - raw).max() <= 1e-2
    return rounded


def _frames_count(n_samples: int, cfg: FeatureConfig = CFG) -> int:
    return (n_samples - cfg.n_fft) // cfg.hop_length + 1


def test_window_counts_and_contents_without_cache(wav_dir: Path):
    songs = [_song(wav_dir, "six"), _song(wav_dir, "five_22k", 0.5, 0.5), _song(wav_dir, "short", -1, 1)]
    ws = build_windows(songs, CFG, cache_dir=None)
    assert ws.failed == [] and [s.id for s in ws.songs] == ["six", "five_22k", "short"]
    # 6 s: 190 frames -> (190-128)//16 + 1 = 4 windows; 5 s: 158 frames -> 2; 1 s: padded -> exactly 1
    assert _frames_count(96000) == 190 and CFG.n_windows(190) == 4
    assert _frames_count(80000) == 158 and CFG.n_windows(158) == 2
    per_song = Counter(ws.song_of().tolist())
    assert [per_song[i] for i in range(3)] == [4, 2, 1] and len(ws) == 7
    np.testing.assert_array_equal(ws.index, [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [2, 0]])
    for s, song in enumerate(songs):
        expected = _expected_frames(song)
        assert ws.frames[s].shape == expected.shape
        wins = frame_windows(expected, CFG)
        rows = np.flatnonzero(ws.index[:, 0] == s)
        assert len(rows) == CFG.n_windows(expected.shape[1]) == wins.shape[0]
        for r, w in zip(rows, wins, strict=True):
            np.testing.assert_array_equal(ws.window(int(r)), w)  # first build, no cache: exact (after rounding)
    batch = ws.batch([0, 6, 3])
    assert batch.shape == (3, 1, 64, 128) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1, 0], ws.window(6))
    np.testing.assert_allclose(ws.targets, [[0.1, -0.2]] * 4 + [[0.5, 0.5]] * 2 + [[-1, 1]], atol=1e-7)
    np.testing.assert_allclose(ws.song_targets(), [[0.1, -0.2], [0.5, 0.5], [-1, 1]], atol=1e-7)


def test_short_clip_is_one_zero_padded_window(wav_dir: Path):
    ws = build_windows([_song(wav_dir, "short")], CFG)
    assert len(ws) == 1 and ws.frames[0].shape == (64, 128)
    signal = load_audio(wav_dir / "short.wav", 16000)
    assert signal.size == 16000
    padded = np.concatenate([signal, np.zeros(CFG.window_samples - signal.size, np.float32)])
    np.testing.assert_array_equal(ws.window(0), log_mel(padded, CFG).astype(np.float16).astype(np.float32))
    # frames wholly inside the padding sit at the amin floor: (10*log10(1e-8) + 30) / 20 = -2.5
    assert np.allclose(ws.window(0)[:, 40:], -2.5, atol=1e-6)


def test_excerpt_songs_window_their_span(wav_dir: Path):
    song = _song(wav_dir, "six", start_s=1.0, end_s=5.5)
    ws = build_windows([song], CFG)
    assert ws.frames[0].shape[1] == _frames_count(72000) == 142
    assert len(ws) == CFG.n_windows(142) == 1
    np.testing.assert_array_equal(ws.frames[0], _expected_frames(song))


def test_feature_cache_is_used_and_keyed_by_config(wav_dir: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    songs = [_song(wav_dir, "six"), _song(wav_dir, "five_22k")]
    calls: list[int] = []
    real_log_mel = windows_mod.log_mel

    def counting(signal, cfg):
        calls.append(signal.size)
        return real_log_mel(signal, cfg)

    monkeypatch.setattr(windows_mod, "log_mel", counting)
    first = build_windows(songs, CFG, cache_dir=cache)
    assert len(calls) == 2
    entries = sorted((cache / "features" / CFG.digest()).glob("*.npy"))
    assert len(entries) == 2 and all(np.load(e).dtype == np.float16 for e in entries)
    for s, song in enumerate(songs):
        np.testing.assert_array_equal(first.frames[s], _expected_frames(song))

    def boom(signal, cfg):
        raise AssertionError("log_mel must not run: the cache should answer")

    monkeypatch.setattr(windows_mod, "log_mel", boom)
    second = build_windows(songs, CFG, cache_dir=cache)
    assert second.frames[0].dtype == np.float32
    np.testing.assert_array_equal(second.index, first.index)
    for s, song in enumerate(songs):
        np.testing.assert_allclose(second.frames[s], _raw_frames(song), rtol=0, atol=1e-2)  # float16 cache
        np.testing.assert_array_equal(second.frames[s], first.frames[s])  # fresh features were rounded alike
    for i in range(len(first)):
        np.testing.assert_array_equal(second.window(i), first.window(i))

    # another FeatureConfig is another cache key: recomputed, stored beside the first
    other = CFG.replace(db_offset=-20.0)
    with pytest.raises(AssertionError, match="cache should answer"):
        build_windows(songs, other, cache_dir=cache)
    calls.clear()
    monkeypatch.setattr(windows_mod, "log_mel", counting)
    third = build_windows(songs, other, cache_dir=cache)
    assert len(calls) == 2
    assert sorted(p.name for p in (cache / "features").iterdir()) == sorted([CFG.digest(), other.digest()])
    # (db + 30)/20 -> (db + 20)/20: -0.5, up to float16 rounding
    np.testing.assert_allclose(third.frames[0], first.frames[0] - 0.5, atol=2e-3)


def test_feature_cache_follows_file_changes_and_survives_damage(wav_dir: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    path = tmp_path / "song.wav"
    write_wav(path, _tone_song(5.0, 3), 16000)
    song = Song(id="x", path=path, valence=0, arousal=0)
    before = song_frames(song, CFG, cache)
    entry = next((cache / "features" / CFG.digest()).glob("*.npy"))
    # a damaged entry is recomputed, not an error
    entry.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(song_frames(song, CFG, cache), before)
    # a changed file (size) gets a new key
    write_wav(path, _tone_song(4.5, 4), 16000)
    after = song_frames(song, CFG, cache)
    assert after.shape[1] == _frames_count(72000) != before.shape[1]
    assert len(list((cache / "features" / CFG.digest()).glob("*.npy"))) == 2


def test_feature_cache_keys_on_content_so_a_copied_dataset_keeps_it(tmp_path: Path, monkeypatch):
    import os
    import shutil

    cache = tmp_path / "cache"
    path = tmp_path / "a" / "song.wav"
    path.parent.mkdir()
    write_wav(path, _tone_song(5.0, 3), 16000)
    before = song_frames(Song(id="x", path=path, valence=0, arousal=0), CFG, cache)
    copy = tmp_path / "b" / "song.wav"  # a copy elsewhere with another mtime: the same bytes
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    os.utime(copy, ns=(1, 1))

    def boom(signal, cfg):
        raise AssertionError("log_mel must not run: the cache should answer")

    monkeypatch.setattr(windows_mod, "log_mel", boom)
    np.testing.assert_array_equal(song_frames(Song(id="y", path=copy, valence=0, arousal=0), CFG, cache), before)
    # an excerpt of the same file is another entry
    with pytest.raises(AssertionError, match="cache should answer"):
        song_frames(Song(id="z", path=copy, valence=0, arousal=0, start_s=1.0), CFG, cache)


def test_dynamic_labels_give_per_window_means(wav_dir: Path):
    times = np.arange(0.0, 6.0, 0.5)  # 0.0 .. 5.5
    dyn = DynamicLabels(times=times, valence=times / 10, arousal=-times / 10)
    song = _song(wav_dir, "six", v=0.9, a=0.9, dynamic=dyn)
    ws = build_windows([song], CFG)
    assert len(ws) == 4
    for j in range(4):
        # window j spans [0.5 j, 0.5 j + 4.03275) s and holds the annotations 0.5 j, 0.5 j + 0.5, ..., 0.5 j + 4.0
        inside = np.arange(0.5 * j, 0.5 * j + 4.01, 0.5)
        assert inside.size == 9
        np.testing.assert_allclose(ws.targets[j], [inside.mean() / 10, -inside.mean() / 10], atol=1e-6)
    # an excerpt: times stay relative to the file, windows start at start_s
    ex = build_windows([_song(wav_dir, "six", v=0.9, a=0.9, dynamic=dyn, start_s=1.0)], CFG)
    assert len(ex) == 2  # 5 s left -> 158 frames -> 2 windows
    inside = np.arange(1.0, 5.01, 0.5)
    np.testing.assert_allclose(ex.targets[0], [inside.mean() / 10, -inside.mean() / 10], atol=1e-6)
    # windows with no annotation inside fall back to the song-level label
    sparse = DynamicLabels(times=np.array([0.2, 0.4]), valence=np.array([-0.4, -0.6]), arousal=np.array([0.2, 0.4]))
    sp = build_windows([_song(wav_dir, "six", v=0.9, a=-0.9, dynamic=sparse)], CFG)
    np.testing.assert_allclose(sp.targets, [[-0.5, 0.3], [0.9, -0.9], [0.9, -0.9], [0.9, -0.9]], atol=1e-6)


def test_corrupt_and_missing_files_are_listed_in_failed(wav_dir: Path):
    songs = [_song(wav_dir, "corrupt"), _song(wav_dir, "six"), _song(wav_dir, "absent")]
    ws = build_windows(songs, CFG)
    assert [s.id for s in ws.songs] == ["six"] and len(ws) == 4
    assert len(ws.failed) == 2
    assert "corrupt.wav" in ws.failed[0] and "corrupt" in ws.failed[0]
    assert "absent.wav" in ws.failed[1] and "no such file" in ws.failed[1]
    assert all("\n" not in f for f in ws.failed)
    assert set(ws.index[:, 0].tolist()) == {0}  # indices point at kept songs only
    with pytest.raises(AudioError, match="corrupt"):
        build_windows(songs, CFG, strict=True)
    with pytest.raises(DataError, match=r"no usable songs out of 2; first problem: .*corrupt\.wav"):
        build_windows([_song(wav_dir, "corrupt"), _song(wav_dir, "absent")], CFG)


def test_song_means():
    ws = WindowSet(
        cfg=CFG,
        songs=[Song(id=f"s{i}", path=Path(f"s{i}.wav"), valence=0, arousal=0) for i in range(3)],
        frames=[np.zeros((64, 128), np.float32)] * 3,
        index=np.array([[0, 0], [0, 1], [0, 2], [1, 0], [2, 0], [2, 1]]),
        targets=np.zeros((6, 2), np.float32),
        failed=[],
    )
    values = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0], [-3.0, 5.0], [0.5, 1.0], [1.5, -1.0]])
    means = ws.song_means(values)
    assert means.dtype == np.float32 and means.shape == (3, 2)
    np.testing.assert_allclose(means, [[3.0, 30.0], [-3.0, 5.0], [1.0, 0.0]])
    np.testing.assert_allclose(ws.song_means(values[:, :1]), [[3.0], [-3.0], [1.0]])
