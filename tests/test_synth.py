"""The built-in synthesised emotion corpus: determinism, files on disk, cue directions, learnability."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgeemo.cli
from edgeemo.data.manifest import read_manifest
from edgeemo.data.synth import (
    SYNTH_VERSION,
    builtin_corpus,
    cues_for,
    render_song,
    sample_targets,
    write_corpus,
)
from edgeemo.errors import DataError
from edgeemo.features import FeatureConfig, log_mel
from edgeemo.metrics import ccc
from edgeemo.runtime.audio import audio_info, load_audio

SR = 16000
N_SONGS, N_TRAIN = 120, 80
DURATION = 6.0


def _spearman(x, y) -> float:
    rx = np.argsort(np.argsort(np.asarray(x)))
    ry = np.argsort(np.argsort(np.asarray(y)))
    return float(np.corrcoef(rx, ry)[0, 1])


@pytest.fixture(scope="module")
def songs():
    """120 short songs of one corpus: audio-derived measurements, log-mel summary features, labels, params."""
    cfg = FeatureConfig()
    rows = []
    for i in range(N_SONGS):
        audio, v, a, params = render_song(7, i, DURATION, SR)
        mel = log_mel(audio, cfg)
        feats = np.concatenate([mel.mean(axis=1), mel.std(axis=1), [mel.mean(axis=0).std()]])
        mag = np.abs(np.fft.rfft(audio))
        centroid = float((mag * np.fft.rfftfreq(audio.size, 1.0 / SR)).sum() / mag.sum())
        rms_db = float(20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2))))
        rows.append((v, a, params, feats, centroid, rms_db, float(np.max(np.abs(audio)))))
    v, a, params, feats, centroid, rms_db, peak = zip(*rows, strict=True)
    return {
        "valence": np.array(v),
        "arousal": np.array(a),
        "params": params,
        "features": np.array(feats),
        "centroid": np.array(centroid),
        "rms_db": np.array(rms_db),
        "peak": np.array(peak),
    }


# --- determinism ----------------------------------------------------------------------------
def test_render_is_deterministic_and_seeded_per_song():
    a1, v1, ar1, p1 = render_song(3, 5, DURATION, SR)
    a2, v2, ar2, p2 = render_song(3, 5, DURATION, SR)
    assert a1.dtype == np.float32 and a1.shape == (int(DURATION * SR),)
    assert np.array_equal(a1, a2) and (v1, ar1, p1) == (v2, ar2, p2)
    assert (v1, ar1) == sample_targets(3, 5)
    other_index, other_seed = render_song(3, 6, DURATION, SR)[0], render_song(4, 5, DURATION, SR)[0]
    assert not np.allclose(a1, other_index) and not np.allclose(a1, other_seed)


def test_song_does_not_depend_on_corpus_size(tmp_path):
    write_corpus(tmp_path / "small", n=2, seed=5, duration_s=DURATION, workers=1)
    write_corpus(tmp_path / "big", n=4, seed=5, duration_s=DURATION, workers=1)
    for i in range(2):
        name = f"clips/synth_5_{i:05d}.wav"
        assert (tmp_path / "small" / name).read_bytes() == (tmp_path / "big" / name).read_bytes()


# --- corpora on disk ------------------------------------------------------------------------
def test_write_corpus_round_trip(tmp_path):
    out = tmp_path / "corpus"
    manifest = write_corpus(out, n=4, seed=1, duration_s=DURATION, sample_rate=SR, workers=1)
    assert manifest == out / "manifest.csv"
    assert manifest.read_text().splitlines()[0] == "# scale: -1 1"
    assert len(list((out / "clips").glob("*.wav"))) == 4
    meta = json.loads((out / "corpus.json").read_text())
    assert meta == {"n": 4, "seed": 1, "duration_s": DURATION, "sample_rate": SR, "version": SYNTH_VERSION}
    assert not (out / "corpus.partial.json").exists()
    songs = read_manifest(manifest)
    assert len(songs) == 4 and not songs.skipped
    for i, song in enumerate(songs.songs):
        assert song.id == f"synth_1_{i:05d}" and song.group == song.id
        assert (song.valence, song.arousal) == pytest.approx(sample_targets(1, i), abs=1e-9)
        sr, dur, channels = audio_info(song.path)
        assert (sr, channels) == (SR, 1) and dur == pytest.approx(DURATION)
        audio = load_audio(song.path, SR)
        assert np.max(np.abs(audio)) < 1.0  # never clips
        assert np.sqrt(np.mean(audio**2)) > 1e-3  # not silent
        expected = render_song(1, i, DURATION, SR)[0]
        assert np.max(np.abs(audio - expected)) < 2.0 / 32768  # the WAV is the rendered song, 16-bit


def test_write_corpus_reuses_matching_clips_and_rewrites_others(tmp_path):
    out = tmp_path / "c"
    write_corpus(out, n=2, seed=2, duration_s=DURATION, workers=1)
    clip = out / "clips" / "synth_2_00000.wav"
    stamp = clip.stat().st_mtime_ns
    write_corpus(out, n=3, seed=2, duration_s=DURATION, workers=1)  # same clips, one more
    assert clip.stat().st_mtime_ns == stamp
    assert len(read_manifest(out / "manifest.csv")) == 3
    write_corpus(out, n=3, seed=2, duration_s=DURATION + 1, workers=1)  # other duration: rewritten
    assert audio_info(clip)[1] == pytest.approx(DURATION + 1)


def test_parallel_workers_write_the_same_files(tmp_path):
    write_corpus(tmp_path / "one", n=4, seed=9, duration_s=5.0, workers=1)
    write_corpus(tmp_path / "two", n=4, seed=9, duration_s=5.0, workers=2)
    for i in range(4):
        name = f"clips/synth_9_{i:05d}.wav"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_builtin_corpus_is_generated_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    songs = builtin_corpus(n=3, seed=0, duration_s=5.0)
    assert songs.name == "builtin" and len(songs) == 3 and not songs.skipped
    assert "built-in synthesised emotion corpus: 3 clips x 5 s, seed 0" in songs.description
    assert all(str(s.path).startswith(str(tmp_path / "cache" / "builtin-")) for s in songs.songs)
    stamp = songs.songs[0].path.stat().st_mtime_ns
    again = builtin_corpus(n=3, seed=0, duration_s=5.0)
    assert [s.id for s in again.songs] == [s.id for s in songs.songs]
    assert again.songs[0].path.stat().st_mtime_ns == stamp
    other = builtin_corpus(n=2, seed=0, duration_s=5.0, cache_dir=tmp_path / "elsewhere")
    assert other.songs[0].path.parent.parent.parent == tmp_path / "elsewhere"
    assert other.songs[0].path.parent.parent != songs.songs[0].path.parent.parent


# --- audio levels and cues ------------------------------------------------------------------
def test_levels_never_clip_and_keep_loudness_differences(songs):
    assert np.all(songs["peak"] <= 10 ** (-1 / 20) + 1e-6)  # at most -1 dBFS
    assert np.all(songs["rms_db"] > -60)
    assert np.ptp(songs["rms_db"]) > 10  # not normalised away


def test_cues_move_with_the_targets(songs):
    v, a, params = songs["valence"], songs["arousal"], songs["params"]
    assert _spearman([p.tempo_bpm for p in params], a) > 0.5
    assert _spearman(songs["rms_db"], a) > 0.3  # measured from the audio
    assert _spearman(songs["centroid"], a) > 0.3  # measured from the audio
    major = np.array([p.is_major for p in params])
    assert major[v > 0.3].mean() > major[v < -0.3].mean() + 0.3
    assert _spearman([p.dissonance for p in params], v) < -0.5
    assert _spearman([p.register for p in params], v) > 0.5
    assert _spearman([p.articulation for p in params], a) < -0.5  # high arousal is staccato
    assert _spearman([p.percussion for p in params], a) > 0.5
    # nuisance is independent of the targets
    assert abs(_spearman([p.gain_offset_db for p in params], a)) < 0.3
    assert abs(_spearman([p.key for p in params], v)) < 0.3


def test_cues_for_rejects_targets_outside_the_unit_range():
    with pytest.raises(DataError):
        cues_for(1.5, 0.0, np.random.default_rng(0))


def test_learnable_but_not_trivial_from_log_mel_summaries(songs):
    """Closed-form ridge on clip-level log-mel statistics: both dimensions learnable, not solved."""
    x, y = songs["features"], np.stack([songs["valence"], songs["arousal"]], axis=1)
    mu, sd = x[:N_TRAIN].mean(axis=0), x[:N_TRAIN].std(axis=0) + 1e-6
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    penalty = 10.0 * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(z[:N_TRAIN].T @ z[:N_TRAIN] + penalty, z[:N_TRAIN].T @ y[:N_TRAIN])
    pred = z[N_TRAIN:] @ w
    ccc_v, ccc_a = ccc(y[N_TRAIN:, 0], pred[:, 0]), ccc(y[N_TRAIN:, 1], pred[:, 1])
    print(f"ridge CCC valence {ccc_v:.3f} arousal {ccc_a:.3f}")
    assert ccc_v > 0.3 and ccc_a > 0.3
    assert (ccc_v + ccc_a) / 2 < 0.97


# --- bad input and the CLI ------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"duration_s": 1.0}, {"sample_rate": 4000}, {"seed": -1}],
)
def test_bad_corpus_parameters_raise_data_error(tmp_path, kwargs):
    with pytest.raises(DataError) as info:
        write_corpus(tmp_path / "c", **{"n": 2, "duration_s": 6.0, **kwargs})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "c").exists()


def test_render_song_rejects_short_durations():
    with pytest.raises(DataError):
        render_song(0, 0, duration_s=1.0)


def test_cli_data_synth(tmp_path):
    out = tmp_path / "c"
    result = CliRunner().invoke(edgeemo.cli.main, ["data", "synth", "--n", "3", "--out", str(out), "--duration", "6"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "clips").glob("*.wav"))) == 3
    assert len(read_manifest(out / "manifest.csv")) == 3
