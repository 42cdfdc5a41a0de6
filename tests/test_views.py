"""Augmented views, musicnn token frames, the per-file view cache and view sets (edgeemo.train.views / viewset)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeemo.errors import AudioError, DataError  # noqa: E402
from edgeemo.features import FeatureConfig  # noqa: E402
from edgeemo.runtime.audio import write_wav as _write_wav  # noqa: E402
from edgeemo.train import views  # noqa: E402
from edgeemo.train.viewset import (  # noqa: E402
    MelWindows,
    TokenWindows,
    build_mix_viewset,
    build_viewset,
    concat_viewsets,
)

FEATURES = FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=500, n_mels=64, n_frames=128, window_hop_s=0.5)


@pytest.fixture(scope="module")
def net():
    from tests.train_fixtures import random_musicnn

    return random_musicnn()


def write_wav(path, signal, sample_rate):
    _write_wav(path, signal, sample_rate)
    return path


def _tone(seconds: float, f: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_view_zero_is_the_file_and_other_views_are_repeatable_and_bounded():
    assert views.view_params("ab12cd34ef56", 0, 0) == views.ViewParams()
    a = views.view_params("ab12cd34ef56", 3, 0)
    assert a == views.view_params("ab12cd34ef56", 3, 0)
    assert a != views.view_params("ab12cd34ef56", 4, 0) != views.view_params("ab12cd34ef56", 3, 1)
    for v in range(1, 40):
        p = views.view_params("0123456789ab", v, 7)
        assert 2 ** (-3 / 12) - 1e-9 <= p.speed <= 2 ** (3 / 12) + 1e-9
        assert abs(p.tilt_db) <= views.TILT_DB_PER_OCTAVE and views.GAIN_DB[0] <= p.gain_db <= views.GAIN_DB[1]
    with pytest.raises(ValueError):
        views.view_params("0123456789ab", -1, 0)


def test_render_view_changes_speed_level_and_tilt_as_asked():
    x = _tone(4.0)
    assert np.array_equal(views.render_view(x, views.ViewParams()), x)
    fast = views.render_view(x, views.ViewParams(speed=1.25))
    assert abs(fast.size - x.size / 1.25) <= 2
    quiet = views.render_view(x, views.ViewParams(gain_db=-6.0))
    assert np.sqrt(np.mean(quiet**2)) / np.sqrt(np.mean(x**2)) == pytest.approx(10 ** (-6 / 20), rel=1e-4)
    noise = np.random.default_rng(1).standard_normal(32000).astype(np.float32) * 0.1

    def high_share(sig: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(sig)) ** 2
        freqs = np.fft.rfftfreq(sig.size, 1 / 16000)
        return float(spec[freqs > 4000].sum() / spec.sum())

    bright = views.render_view(noise, views.ViewParams(tilt_db=3.0))
    dark = views.render_view(noise, views.ViewParams(tilt_db=-3.0))
    assert high_share(dark) < high_share(noise) < high_share(bright)


def test_musicnn_tokens_are_mean_then_max_and_do_not_depend_on_segmenting(net, monkeypatch):
    x = _tone(9.0)
    whole = views.musicnn_tokens(net, x)
    n_frames = (x.size - 512) // 256 + 1
    assert whole.shape == (n_frames // views.TOKEN_POOL, views.TOKEN_DIM) and whole.dtype == np.float16
    half = views.TOKEN_DIM // 2
    assert np.all(whole[:, :half] <= whole[:, half:] + 1e-2)  # a group's mean never exceeds its max
    monkeypatch.setattr(views, "_SEGMENT", 100)
    np.testing.assert_allclose(views.musicnn_tokens(net, x).astype(np.float32), whole.astype(np.float32), atol=2e-3)
    with pytest.raises(AudioError, match="shorter than one musicnn token"):
        views.musicnn_tokens(net, _tone(0.2))


def test_token_windows_are_centred_on_the_student_windows():
    n_tok = 100
    tokens = np.arange(n_tok, dtype=np.float16)[:, None].repeat(4, axis=1)
    centres = FEATURES.window_center_s(np.arange(30))
    got = views.token_windows(tokens, centres)
    assert got.shape == (30, views.N_TOKENS, 4)
    token_s = views.TOKEN_POOL * 256 / 16000
    mid = got[:, views.N_TOKENS // 2, 0].astype(np.float64)
    token_centre = (views.TOKEN_POOL / 2 + 1) * 256 / 16000 + mid * token_s
    assert np.all(np.abs(token_centre - centres) <= token_s / 2 + 1e-9)
    # clamped inside the file, and a file shorter than N_TOKENS repeats its last token
    assert views.token_windows(tokens, np.array([-5.0, 1e4]))[:, 0, 0].tolist() == [0, n_tok - views.N_TOKENS]
    short = views.token_windows(tokens[:4], np.array([1.0]))
    assert short.shape == (1, views.N_TOKENS, 4) and short[0, -1, 0] == 3


def _entries(cache, stream):
    return sorted((cache / "views").glob(f"{stream}-*.npz"))


def test_file_view_cache_round_trips_and_recomputes_a_damaged_entry(net, tmp_path, monkeypatch):
    path = write_wav(tmp_path / "a.wav", _tone(6.0), 16000)
    cache = tmp_path / "cache"
    first = views.file_view(path, FEATURES, 1, 0, net, "w", cache)
    assert len(_entries(cache, "mel")) == 1 and len(_entries(cache, "tokens")) == 1
    direct = views.compute_view(path, FEATURES, 1, 0, net)
    np.testing.assert_array_equal(first.mel, direct.mel)
    np.testing.assert_array_equal(first.tokens, direct.tokens)

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a cached view")

    monkeypatch.setattr(views, "render_file_view", boom)
    again = views.file_view(path, FEATURES, 1, 0, net, "w", cache)
    np.testing.assert_array_equal(again.mel, first.mel)
    np.testing.assert_array_equal(again.tokens, first.tokens)
    monkeypatch.undo()
    for stream, name in (("mel", "mel"), ("tokens", "tokens")):
        entry = _entries(cache, stream)[0]
        good = entry.read_bytes()
        for damaged in (b"not an npz", good[: len(good) // 2]):  # garbage, and a truncated zip (BadZipFile)
            entry.write_bytes(damaged)
            fixed = views.file_view(path, FEATURES, 1, 0, net, "w", cache)
            np.testing.assert_array_equal(getattr(fixed, name), getattr(first, name))
            assert entry.read_bytes() == good  # rewritten whole
    # another view is two more entries; other weights, only a token entry
    views.file_view(path, FEATURES, 2, 0, net, "w", cache)
    views.file_view(path, FEATURES, 1, 0, net, "other", cache)
    assert len(_entries(cache, "mel")) == 2 and len(_entries(cache, "tokens")) == 3


def test_a_new_front_end_recomputes_only_the_log_mel_stream(net, tmp_path, monkeypatch):
    path = write_wav(tmp_path / "a.wav", _tone(6.0), 16000)
    cache = tmp_path / "cache"
    first = views.file_view(path, FEATURES, 1, 0, net, "w", cache)
    wider = FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=500, n_mels=96, n_frames=128, window_hop_s=0.5)

    def no_musicnn(*args, **kwargs):
        raise AssertionError("ran musicnn for a cached token stream")

    monkeypatch.setattr(views, "musicnn_tokens", no_musicnn)
    got = views.file_view(path, wider, 1, 0, net, "w", cache)
    monkeypatch.undo()
    np.testing.assert_array_equal(got.tokens, first.tokens)
    assert got.mel.shape[0] == 96
    np.testing.assert_array_equal(got.mel, views.compute_view(path, wider, 1, 0, net).mel)
    assert len(_entries(cache, "mel")) == 2 and len(_entries(cache, "tokens")) == 1


def test_views_need_musicnn_rate_features_and_whole_windows(net, tmp_path):
    path = write_wav(tmp_path / "a.wav", _tone(3.0), 16000)
    with pytest.raises(AudioError, match="shorter than one window"):
        views.compute_view(path, FEATURES, 0, 0, net)
    other = FeatureConfig(sample_rate=22050, n_fft=1024, hop_length=441, n_mels=64, n_frames=128)
    with pytest.raises(AudioError, match="16000 Hz"):
        views.compute_view(path, other, 0, 0, net)


def test_build_viewset_indexes_windows_skips_bad_files_and_joins(net, tmp_path):
    a = write_wav(tmp_path / "a.wav", _tone(8.0, 330), 16000)
    b = write_wav(tmp_path / "b.wav", _tone(6.0, 550), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    labels = np.array([[1, 1], [-1, 1], [0, 0]], np.float32)
    vs = build_viewset([a, b, bad], labels, FEATURES, 2, 0, net, "w", tmp_path / "c", progress=False)
    assert len(vs.failed) == 1 and "bad.wav" in vs.failed[0]
    assert vs.entries == [(0, 0), (0, 1), (1, 0), (1, 1)]
    per_entry = np.bincount(vs.index[:, 0])
    assert per_entry.tolist() == [v.n_windows(FEATURES) for v in vs.views]
    assert vs.mel(0).shape == (64, 128) and vs.tokens(0).shape == (views.N_TOKENS, views.TOKEN_DIM)
    of_b = vs.item_of() == 1
    np.testing.assert_array_equal(vs.window_labels()[of_b], np.tile([-1, 1], (int(of_b.sum()), 1)))
    capped = build_viewset([a], None, FEATURES, 1, 0, net, "w", tmp_path / "c", max_windows=3, progress=False)
    last = vs.views[0].n_windows(FEATURES) - 1
    assert len(capped) == 3 and capped.index[:, 1].tolist() == np.linspace(0, last, 3).round().astype(int).tolist()
    assert np.all(np.isnan(capped.labels))
    both = concat_viewsets(vs, capped)
    assert len(both) == len(vs) + 3 and both.item_of()[-1] == 3 and both.entries[-1] == (3, 0)
    np.testing.assert_array_equal(both.mel(len(vs)), capped.mel(0))
    means = both.item_means(np.ones((len(both), 2)))
    assert np.isnan(means[2, 0]) and means[3, 0] == 1.0  # the bad file has no window
    tok = TokenWindows(both)
    assert len(tok) == len(vs)  # unlabeled windows carry no teacher label
    mel = MelWindows(both, np.zeros((len(both), 2)))
    x, y = mel[len(both) - 1]
    assert x.shape == (1, 64, 128) and y.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert mel[0][1][2].item() == 1.0
    with pytest.raises(DataError):
        build_viewset([bad], None, FEATURES, 1, 0, net, "w", None, progress=False)


def test_mix_partners_are_other_files_and_stay_the_same_in_every_set_that_holds_them():
    digests = [f"{i:012x}" + "0" * 52 for i in range(1, 41)]
    for k in range(3):
        for i, d in enumerate(digests):
            j, share = views.mix_partner(d, digests, k, 0)
            assert j != i and views.MIX_SHARE[0] <= share <= views.MIX_SHARE[1]
            assert views.mix_partner(d, digests, k, 0) == (j, share)  # repeatable
            # another candidate set (a CV fold's training songs) that still holds the partner keeps it
            subset = [c for n, c in enumerate(digests) if n % 3 != 1 or n == j]
            assert subset[views.mix_partner(d, subset, k, 0)[0]] == digests[j]
    assert views.mix_partner(digests[0], digests, 0, 0) != views.mix_partner(digests[0], digests, 1, 0)
    with pytest.raises(DataError, match="another file"):
        views.mix_partner(digests[0], digests[:1], 0, 0)


def test_render_mix_level_matches_and_loops_the_partner():
    x = _tone(4.0, 440.0)
    y = 0.1 * _tone(1.5, 1000.0, seed=1)  # quieter and shorter
    mixed = views.render_mix(x, y, 0.4)
    assert mixed.shape == x.shape and mixed.dtype == np.float32
    partner = np.resize(y, x.size) * np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(y**2))
    np.testing.assert_allclose(mixed, np.clip(0.6 * x + 0.4 * partner, -1, 1), atol=1e-5)
    np.testing.assert_allclose(views.render_mix(x, np.zeros(100, np.float32), 0.4), 0.6 * x, atol=1e-6)


def test_mixed_views_are_cached_and_unlabeled(net, tmp_path):
    paths = [write_wav(tmp_path / f"s{i}.wav", _tone(6.0, 220.0 * (i + 1), seed=i), 16000) for i in range(3)]
    mixes = build_mix_viewset(paths, FEATURES, 2, 0, net, "w", tmp_path / "cache", progress=False)
    assert mixes.entries == [(i, k) for i in range(3) for k in range(2)]
    assert np.all(np.isnan(mixes.labels)) and len(mixes) == sum(v.n_windows(FEATURES) for v in mixes.views)
    assert len(list((tmp_path / "cache" / "views").glob("*.npz"))) == 12  # a log-mel and a token entry each
    digests = [views.content_digest(p) for p in paths]
    j, share = views.mix_partner(digests[0], digests, 1, 0)
    signal = views.render_mix(views.load_audio(paths[0], 16000), views.load_audio(paths[j], 16000), share)
    np.testing.assert_array_equal(mixes.views[1].mel, views.student_frames(signal, FEATURES, paths[0]))  # (0, 1)
    np.testing.assert_array_equal(mixes.views[1].tokens, views.token_frames(net, signal, paths[0]))
    again = build_mix_viewset(paths, FEATURES, 2, 0, net, "w", tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again.views[5].tokens, mixes.views[5].tokens)
    assert len(list((tmp_path / "cache" / "views").glob("*.npz"))) == 12  # read back, nothing recomputed
    with pytest.raises(DataError, match="another file"):  # one training song has no partner
        build_mix_viewset(paths[:1], FEATURES, 1, 0, net, "w", None, progress=False)
