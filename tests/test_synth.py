"""The built-in corpus: determinism, files round trip, cue directions, learnable-but-not-trivial, errors, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgeemo.cli import main
from edgeemo.data.manifest import read_manifest
from edgeemo.data.synth import builtin_corpus, render_song, write_corpus
from edgeemo.errors import DataError
from edgeemo.features import FeatureConfig, log_mel
from edgeemo.metrics import ccc


def test_render_is_deterministic_and_depends_on_seed_and_index():
    a, v, ar, _ = render_song(3, 5, 6.0)
    b, v2, ar2, _ = render_song(3, 5, 6.0)
    assert np.array_equal(a, b) and (v, ar) == (v2, ar2)
    assert not np.array_equal(a, render_song(3, 6, 6.0)[0])
    assert not np.array_equal(a, render_song(4, 5, 6.0)[0])
    assert a.dtype == np.float32 and a.size == 6 * 16000


def test_write_corpus_round_trip_and_independent_of_n(tmp_path):
    manifest = write_corpus(tmp_path / "c", n=4, seed=1, duration_s=6.0, workers=1)
    songs = read_manifest(manifest)
    assert len(songs) == 4 and not songs.skipped
    for i, song in enumerate(songs.songs):
        audio, v, a, _ = render_song(1, i, 6.0)
        assert (song.valence, song.arousal) == pytest.approx((v, a), abs=1e-6)
        data, sr = sf.read(song.path, dtype="float32")
        assert sr == 16000 and data.size == 6 * 16000
        assert 1e-3 < np.abs(data).max() < 1.0
        np.testing.assert_allclose(data, audio, atol=1.0 / 32767 + 1e-6)  # 16-bit PCM of the same render
    bigger = read_manifest(write_corpus(tmp_path / "d", n=6, seed=1, duration_s=6.0, workers=2))
    assert [s.valence for s in bigger.songs[:4]] == [s.valence for s in songs.songs]


def _spectral_centroid(x: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    return float((spec * freqs).sum() / spec.sum())


def test_cues_move_with_the_targets():
    rows = []
    for i in range(40):
        x, v, a, p = render_song(7, i, 5.0)
        rows.append((v, a, p.tempo_bpm, 20 * np.log10(np.sqrt(np.mean(x**2))), p.major, _spectral_centroid(x)))
    v, a, tempo, loud, major, centroid = (np.array(c, dtype=float) for c in zip(*rows))
    assert np.corrcoef(tempo, a)[0, 1] > 0.5
    assert np.corrcoef(loud, a)[0, 1] > 0.3
    assert np.corrcoef(centroid, a)[0, 1] > 0.2
    assert major[v > 0.3].mean() > major[v < -0.3].mean()


def test_learnable_but_not_trivial_for_a_linear_model():
    cfg = FeatureConfig()
    feats, y = [], []
    for i in range(120):
        x, v, a, _ = render_song(11, i, 6.0)
        f = log_mel(x, cfg)
        feats.append(np.concatenate([f.mean(1), f.std(1), [f.mean(0).std()]]))
        y.append((v, a))
    X = np.c_[np.array(feats), np.ones(len(feats))]
    Y = np.array(y)
    tr, te = slice(0, 80), slice(80, 120)
    W = np.linalg.solve(X[tr].T @ X[tr] + np.eye(X.shape[1]), X[tr].T @ Y[tr])
    pred = X[te] @ W
    cv, ca = ccc(Y[te, 0], pred[:, 0]), ccc(Y[te, 1], pred[:, 1])
    assert cv > 0.3 and ca > 0.3, (cv, ca)  # learnable
    assert (cv + ca) / 2 < 0.97, (cv, ca)  # not trivial


def test_bad_arguments_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="at least 1"):
        write_corpus(tmp_path, n=0)
    with pytest.raises(DataError, match="at least 5 s"):
        render_song(0, 0, duration_s=1.0)
    with pytest.raises(DataError, match="too low"):
        builtin_corpus(n=2, sample_rate=4000, cache_dir=tmp_path)


def test_builtin_corpus_is_cached(tmp_path):
    first = builtin_corpus(n=3, duration_s=5.0, cache_dir=tmp_path)
    mtimes = [s.path.stat().st_mtime_ns for s in first.songs]
    second = builtin_corpus(n=3, duration_s=5.0, cache_dir=tmp_path)
    assert [s.path.stat().st_mtime_ns for s in second.songs] == mtimes
    assert "built-in" in second.description and second.name == "builtin"


def test_cli_data_synth(tmp_path):
    out = tmp_path / "c"
    result = CliRunner().invoke(main, ["data", "synth", "--n", "3", "--out", str(out), "--duration", "6"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "clips").glob("*.wav"))) == 3
    assert len(read_manifest(out / "manifest.csv")) == 3
