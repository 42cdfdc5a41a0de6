"""Log-mel front end: parity with librosa, the Slaney filterbank, streaming, FeatureConfig, window arithmetic."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeemo.errors import EdgeemoError
from edgeemo.features import (
    FeatureConfig,
    LogMelStream,
    frame_windows,
    hz_to_mel,
    librosa_log_mel,
    log_mel,
    log_scale,
    mel_filterbank,
    mel_power,
    mel_to_hz,
    pad_to_window,
)
from tests.realdata import SHARED_DATA

try:
    import librosa
except ImportError:  # librosa is in the [train] extra only
    librosa = None

needs_librosa = pytest.mark.skipif(librosa is None, reason="librosa (the [train] extra) is not installed")

REAL_AUDIO = SHARED_DATA / "4q-dev" / "audio"

DEFAULT = FeatureConfig()
BASE_128 = FeatureConfig(n_mels=128, hop_length=250, n_frames=256)
SR_22K = FeatureConfig(sample_rate=22050, hop_length=441, fmax=11025.0)  # 0.5 s window hop = 25 frames
CONFIGS = {"default": DEFAULT, "128x256": BASE_128, "22k": SR_22K}

PARITY_ATOL = 1e-4


def _noise(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(sr * seconds))).astype(np.float32)


def _chirp(sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    f0, f1 = 30.0, 0.95 * sr / 2
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.5 * np.sin(phase)).astype(np.float32)


# --- parity with librosa ----------------------------------------------------------------------
@needs_librosa
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("kind", ["noise", "chirp", "noise_plus_silence"])
def test_log_mel_matches_librosa_on_generated_signals(cfg_name: str, kind: str):
    cfg = CONFIGS[cfg_name]
    if kind == "noise":
        y = _noise(cfg.sample_rate, 3.0)
    elif kind == "chirp":
        y = _chirp(cfg.sample_rate, 3.0)
    else:  # quiet passages exercise the amin floor of the log
        y = np.concatenate([_noise(cfg.sample_rate, 1.0), np.zeros(cfg.sample_rate, np.float32)])
    ours = log_mel(y, cfg)
    ref = librosa_log_mel(y, cfg)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (cfg.n_mels, (y.size - cfg.n_fft) // cfg.hop_length + 1)
    assert np.abs(ours - ref).max() <= PARITY_ATOL
    assert np.ptp(ours) > 1.0  # not trivially flat


@needs_librosa
@pytest.mark.parametrize("freq", [60.0, 440.0, 3999.0])
def test_log_mel_parity_holds_in_quiet_bands_next_to_a_loud_tone(freq: float):
    """Regression: a float32 Hann window raised the sidelobe floor and cost ~1.5e-4 here (now ~5e-7)."""
    cfg = BASE_128
    t = np.arange(cfg.sample_rate * 2) / cfg.sample_rate
    y = (0.9 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    ours = log_mel(y, cfg)
    ref = librosa_log_mel(y, cfg)
    assert ours.min() < -2.0  # some bands really are quiet (near the amin floor)
    assert np.abs(ours - ref).max() <= 1e-5


@needs_librosa
@pytest.mark.realdata
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_log_mel_matches_librosa_on_real_music(cfg_name: str):
    mp3s = sorted(REAL_AUDIO.glob("*.mp3")) if REAL_AUDIO.is_dir() else []
    if not mp3s:
        pytest.skip(f"no real audio under {REAL_AUDIO}")
    from edgeemo.runtime.audio import load_audio

    cfg = CONFIGS[cfg_name]
    y = load_audio(mp3s[0], cfg.sample_rate)
    assert y.size > 10 * cfg.sample_rate
    ours = log_mel(y, cfg)
    ref = librosa_log_mel(y, cfg)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= PARITY_ATOL


@needs_librosa
@pytest.mark.parametrize(
    "cfg",
    [
        DEFAULT,
        BASE_128,
        SR_22K,
        FeatureConfig(fmin=0.0, fmax=4000.0, n_mels=40),
        FeatureConfig(n_fft=2048, n_mels=96, fmin=50.0, fmax=7600.0),
        FeatureConfig(sample_rate=44100, n_fft=2048, hop_length=441, fmax=22050.0, n_mels=128),
    ],
    ids=["default", "128x256", "22k", "fmin0-40mels", "nfft2048", "44k"],
)
def test_mel_filterbank_matches_librosa(cfg: FeatureConfig):
    ours = mel_filterbank(cfg)
    ref = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm="slaney"
    )
    assert ours.shape == ref.shape == (cfg.n_mels, cfg.n_fft // 2 + 1)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    assert not ours.flags.writeable  # cached, shared: must not be mutable
    assert mel_filterbank(cfg) is ours


@needs_librosa
def test_mel_scale_matches_librosa_and_round_trips():
    hz = np.array([0.0, 20.0, 500.0, 999.9, 1000.0, 1000.1, 4000.0, 8000.0, 11025.0, 22050.0])
    np.testing.assert_allclose(hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False), rtol=1e-12, atol=1e-12)
    mels = np.linspace(0, 45, 17)
    np.testing.assert_allclose(mel_to_hz(mels), librosa.mel_to_hz(mels, htk=False), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_mel_scale_known_values():
    # linear part: 200/3 Hz per mel below 1 kHz; 1 kHz is mel 15; the log part has 27 mels per factor 6.4
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(100.0)) == pytest.approx(1.5)
    assert float(hz_to_mel(6400.0)) == pytest.approx(15.0 + 27.0)
    assert float(mel_to_hz(42.0)) == pytest.approx(6400.0)


def test_log_scale_is_the_fixed_formula():
    cfg = FeatureConfig()
    power = np.array([[0.0, 1e-3, 1.0, 1e3]], dtype=np.float32)
    expected = (10 * np.log10(power.astype(np.float64) + cfg.amin) - cfg.db_offset) / cfg.db_scale
    out = log_scale(power, cfg)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    assert out[0, 0] == pytest.approx((-80.0 + 30.0) / 20.0, abs=1e-5)  # the amin floor
    assert out[0, 2] == pytest.approx(1.5, abs=1e-5)  # 0 dB -> (0 + 30) / 20


def test_sine_energy_lands_in_the_right_mel_band():
    cfg = DEFAULT
    t = np.arange(cfg.sample_rate * 2) / cfg.sample_rate
    freq = 2000.0
    frames = log_mel(np.sin(2 * np.pi * freq * t).astype(np.float32), cfg)
    peak_band = int(np.argmax(frames.mean(axis=1)))
    fb = mel_filterbank(cfg)
    bin_of_tone = round(freq * cfg.n_fft / cfg.sample_rate)
    assert fb[peak_band, bin_of_tone] == fb[:, bin_of_tone].max()


def test_mel_power_shapes_and_errors():
    cfg = DEFAULT
    assert mel_power(np.zeros(cfg.n_fft - 1, np.float32), cfg).shape == (cfg.n_mels, 0)
    assert mel_power(np.zeros(cfg.n_fft, np.float32), cfg).shape == (cfg.n_mels, 1)
    assert mel_power(np.zeros(cfg.n_fft + cfg.hop_length - 1, np.float32), cfg).shape == (cfg.n_mels, 1)
    assert mel_power(np.zeros(cfg.n_fft + cfg.hop_length, np.float32), cfg).shape == (cfg.n_mels, 2)
    assert log_mel(np.zeros(0, np.float32), cfg).shape == (cfg.n_mels, 0)
    with pytest.raises(EdgeemoError, match="mono"):
        log_mel(np.zeros((2, 4000), np.float32), cfg)


def test_log_mel_frames_are_local_and_uncentred():
    """Frame i depends only on samples [i*hop, i*hop + n_fft): a later change leaves earlier frames alone."""
    cfg = DEFAULT
    x = _noise(cfg.sample_rate, 2.0)
    base = log_mel(x, cfg)
    y = x.copy()
    k = 20
    y[k * cfg.hop_length + cfg.n_fft :] += 0.5  # first sample outside frame k
    changed = log_mel(y, cfg)
    np.testing.assert_array_equal(changed[:, : k + 1], base[:, : k + 1])
    assert np.abs(changed[:, k + 1 :] - base[:, k + 1 :]).max() > 0.01
    # one frame equals a direct computation on its own samples
    seg = x[k * cfg.hop_length : k * cfg.hop_length + cfg.n_fft].astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)
    power = np.abs(np.fft.rfft(seg * window)) ** 2
    direct = (10 * np.log10(mel_filterbank(cfg).astype(np.float64) @ power + cfg.amin) - cfg.db_offset) / cfg.db_scale
    np.testing.assert_allclose(base[:, k], direct, rtol=0, atol=1e-4)


# --- streaming -------------------------------------------------------------------------------
def _stream(signal: np.ndarray, sizes: list[int], cfg: FeatureConfig) -> tuple[np.ndarray, LogMelStream]:
    stream = LogMelStream(cfg)
    parts = []
    pos, i = 0, 0
    while pos < signal.size:
        n = sizes[i % len(sizes)]
        parts.append(stream.push(signal[pos : pos + n]))
        pos += n
        i += 1
    for p in parts:
        assert p.dtype == np.float32 and p.shape[0] == cfg.n_mels
    return np.concatenate(parts, axis=1), stream


STREAM_SIGNAL = _noise(16000, 2.3, seed=3) + 0.3 * _chirp(16000, 2.3)
STREAM_WHOLE = log_mel(STREAM_SIGNAL, DEFAULT)


@pytest.mark.parametrize("chunk", [1, 7, 499, 1001, 16000, 10**6])
def test_stream_in_fixed_chunks_equals_whole_signal(chunk: int):
    out, stream = _stream(STREAM_SIGNAL, [chunk], DEFAULT)
    assert out.shape == STREAM_WHOLE.shape
    np.testing.assert_allclose(out, STREAM_WHOLE, rtol=0, atol=1e-6)
    assert stream.frames_emitted == STREAM_WHOLE.shape[1]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=12))
def test_stream_in_random_chunks_equals_whole_signal(sizes: list[int]):
    out, stream = _stream(STREAM_SIGNAL, sizes, DEFAULT)
    assert out.shape == STREAM_WHOLE.shape
    np.testing.assert_allclose(out, STREAM_WHOLE, rtol=0, atol=1e-6)
    assert stream.frames_emitted == STREAM_WHOLE.shape[1]


def test_stream_128x256_config_and_reset():
    cfg = BASE_128
    x = _chirp(cfg.sample_rate, 1.5)
    whole = log_mel(x, cfg)
    out, stream = _stream(x, [333, 1, 2047], cfg)
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-6)
    # an empty push and a too-short push emit no frames
    assert stream.push(np.zeros(0, np.float32)).shape == (cfg.n_mels, 0)
    stream.reset()
    assert stream.frames_emitted == 0
    assert stream.push(x[: cfg.n_fft - 1]).shape == (cfg.n_mels, 0)
    first = stream.push(x[cfg.n_fft - 1 : cfg.n_fft])
    np.testing.assert_allclose(first, whole[:, :1], rtol=0, atol=1e-6)
    assert stream.frames_emitted == 1


# --- FeatureConfig -----------------------------------------------------------------------------
def test_default_config_derived_sizes():
    cfg = DEFAULT
    assert cfg.shape == (64, 128)
    assert cfg.window_hop_frames == 16  # 0.5 s * 16000 / 500
    assert cfg.window_samples == 127 * 500 + 1024 == 64524
    assert cfg.window_seconds == pytest.approx(64524 / 16000)
    assert BASE_128.window_hop_frames == 32 and BASE_128.window_samples == 255 * 250 + 1024
    assert SR_22K.window_hop_frames == 25


@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_config_json_round_trip(cfg: FeatureConfig):
    text = cfg.to_json()
    assert json.loads(text) == cfg.to_dict()
    back = FeatureConfig.from_json(text)
    assert back == cfg and back.digest() == cfg.digest()
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg


def test_digest_is_stable():
    # cache keys: must not change between processes or releases without a reason (a new cache dir is a re-featurise)
    assert DEFAULT.digest() == "549b23524cee068f"
    assert FeatureConfig().digest() == DEFAULT.digest()
    assert len(DEFAULT.digest()) == 16 and int(DEFAULT.digest(), 16) >= 0


def test_equal_configs_have_equal_digests():
    """An int where a float is expected (``fmax=8000``, as JSON or a CLI gives it) is the same config."""
    same = FeatureConfig(fmin=20, fmax=8000, window_hop_s=0.5, amin=1e-8, db_offset=-30, db_scale=20)
    assert same == DEFAULT
    assert same.digest() == DEFAULT.digest()
    assert same.to_json() == DEFAULT.to_json()
    assert FeatureConfig.from_json(json.dumps({"fmax": 8000, "sample_rate": 16000})).digest() == DEFAULT.digest()


def test_config_numeric_types_are_normalised():
    cfg = FeatureConfig(sample_rate=np.int64(16000), n_fft=1024.0, fmax=np.float32(8000.0))
    assert cfg == DEFAULT and cfg.digest() == DEFAULT.digest()
    assert type(cfg.sample_rate) is int and type(cfg.n_fft) is int and type(cfg.fmax) is float
    assert cfg.window_samples == DEFAULT.window_samples
    with pytest.raises(EdgeemoError, match="n_mels must be an integer"):
        FeatureConfig(n_mels=64.5)


_CHANGES = {
    "sample_rate": 32000,
    "n_fft": 2048,
    "hop_length": 250,
    "n_mels": 80,
    "fmin": 30.0,
    "fmax": 7000.0,
    "n_frames": 96,
    "window_hop_s": 1.0,
    "amin": 1e-10,
    "db_offset": -20.0,
    "db_scale": 10.0,
    "win_length": 400,
    "htk": 1,
    "power": 1,
}


def test_digest_changes_with_every_field():
    assert set(_CHANGES) == {f.name for f in dataclasses.fields(FeatureConfig)}, "new field: add it here"
    seen = {DEFAULT.digest()}
    for name, value in _CHANGES.items():
        changed = DEFAULT.replace(**{name: value})
        assert changed != DEFAULT
        d = changed.digest()
        assert d not in seen, name
        seen.add(d)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fmax": 8000.5}, "fmax"),
        ({"sample_rate": 22050}, "multiple of hop_length"),  # 0.5 s = 11025 samples, not a multiple of 500
        ({"fmin": 9000.0}, "fmin"),
        ({"fmin": -1.0}, "fmin"),
        ({"fmin": 8000.0}, "fmin"),
        ({"window_hop_s": 0.51}, "multiple of hop_length"),
        ({"window_hop_s": 0.0}, "multiple of hop_length"),
        ({"hop_length": 300}, "multiple of hop_length"),  # 8000 samples is not a multiple of 300
        ({"n_fft": 0}, "positive"),
        ({"hop_length": -5}, "positive"),
        ({"n_mels": 0}, "positive"),
        ({"n_frames": 0}, "positive"),
        ({"amin": 0.0}, "amin"),
        ({"db_scale": -1.0}, "db_scale"),
        ({"win_length": 2048}, "win_length"),
        ({"win_length": -1}, "win_length"),
        ({"htk": 2}, "htk must be 0 or 1"),
        ({"power": 3}, "power 1 or 2"),
    ],
)
def test_invalid_configs_raise(changes: dict, message: str):
    with pytest.raises(EdgeemoError, match="invalid FeatureConfig") as info:
        FeatureConfig(**changes)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_fmax_at_nyquist_is_valid_and_unknown_fields_raise():
    assert FeatureConfig(fmax=8000.0).fmax == 8000.0
    assert FeatureConfig(sample_rate=22050, hop_length=441, fmax=11025.0).fmax == 11025.0
    with pytest.raises(EdgeemoError, match="no field"):
        FeatureConfig.from_dict({**DEFAULT.to_dict(), "center": True})
    with pytest.raises(EdgeemoError, match="invalid FeatureConfig"):
        FeatureConfig.from_json(json.dumps({**DEFAULT.to_dict(), "fmax": 9000.0}))


# --- windows arithmetic -------------------------------------------------------------------------
def test_n_windows_and_times_on_a_known_length():
    cfg = DEFAULT  # 128-frame windows every 16 frames
    assert cfg.n_windows(0) == 0
    assert cfg.n_windows(127) == 0
    assert cfg.n_windows(128) == 1
    assert cfg.n_windows(143) == 1
    assert cfg.n_windows(144) == 2
    assert cfg.n_windows(300) == (300 - 128) // 16 + 1 == 11
    np.testing.assert_allclose(cfg.window_start_s(np.arange(4)), [0.0, 0.5, 1.0, 1.5])
    half = 64524 / 2 / 16000
    np.testing.assert_allclose(cfg.window_center_s(np.array([0, 3])), [half, 1.5 + half])
    assert float(cfg.window_center_s(10)) == pytest.approx(5.0 + half)
    # 10 s of audio at 16 kHz: (160000 - 1024) // 500 + 1 = 318 frames -> 12 windows
    frames = log_mel(_noise(16000, 10.0), cfg)
    assert frames.shape[1] == 318
    assert cfg.n_windows(318) == 12
    assert frame_windows(frames, cfg).shape == (12, 64, 128)


def test_frame_windows_are_the_right_slices():
    cfg = FeatureConfig(n_frames=8, n_mels=3, hop_length=500, window_hop_s=0.0625, fmax=8000.0)  # hop 2 frames
    assert cfg.window_hop_frames == 2
    frames = np.arange(3 * 21, dtype=np.float32).reshape(3, 21)
    wins = frame_windows(frames, cfg)
    assert wins.shape == (cfg.n_windows(21), 3, 8) == (7, 3, 8)
    for i in range(7):
        np.testing.assert_array_equal(wins[i], frames[:, 2 * i : 2 * i + 8])
    assert frame_windows(frames[:, :7], cfg).shape == (0, 3, 8)
    assert np.shares_memory(wins, frames)  # a view, no copy


def test_pad_to_window():
    cfg = DEFAULT
    short = np.ones(1000, np.float32)
    padded, was_padded = pad_to_window(short, cfg)
    assert was_padded and padded.size == cfg.window_samples and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:1000], short)
    assert not padded[1000:].any()
    assert cfg.n_windows(log_mel(padded, cfg).shape[1]) == 1  # a padded clip gives exactly one window
    exact = np.ones(cfg.window_samples, np.float32)
    out, was_padded = pad_to_window(exact, cfg)
    assert not was_padded and out.size == cfg.window_samples
    long = np.ones(cfg.window_samples + 7, np.float64)
    out, was_padded = pad_to_window(long, cfg)
    assert not was_padded and out.size == long.size and out.dtype == np.float32
    empty, was_padded = pad_to_window(np.zeros(0), cfg)
    assert was_padded and empty.size == cfg.window_samples


# --- a window shorter than the FFT, HTK bands, magnitude: YAMNet's own front end -------------------------
YAMNET_LIKE = FeatureConfig(
    n_fft=512, hop_length=160, n_mels=64, fmin=125.0, fmax=7500.0, n_frames=400, amin=1e-3, db_offset=0.0,
    db_scale=10.0 / np.log(10.0), win_length=400, htk=1, power=1,
)  # fmt: skip


def test_added_fields_at_their_defaults_leave_the_dict_and_digest_as_before():
    assert set(DEFAULT.to_dict()) == {f.name for f in dataclasses.fields(FeatureConfig)} - {
        "win_length",
        "htk",
        "power",
    }
    assert YAMNET_LIKE.to_dict()["win_length"] == 400 and FeatureConfig.from_dict(YAMNET_LIKE.to_dict()) == YAMNET_LIKE
    assert YAMNET_LIKE.frame_length == 400 and DEFAULT.frame_length == 1024
    assert YAMNET_LIKE.window_samples == 399 * 160 + 400


def test_short_window_htk_magnitude_frames_are_the_formula():
    """Frame t: a 400-sample periodic Hann window from sample 160 t, zero-padded to 512, |rfft|, HTK triangles,
    ln(m + 0.001) (db_scale 10/ln 10 turns the dB formula into the natural log)."""
    y = _noise(16000, 1.0, seed=3)
    got = log_mel(y, YAMNET_LIKE)
    assert got.shape == (64, (y.size - 400) // 160 + 1)
    t = 7
    frame = y[160 * t : 160 * t + 400] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400))
    mag = np.abs(np.fft.rfft(frame, n=512))
    ref = np.log(mel_filterbank(YAMNET_LIKE).astype(np.float64) @ mag + 1e-3)
    np.testing.assert_allclose(got[:, t], ref, atol=1e-5)
    fb = mel_filterbank(YAMNET_LIKE)
    assert fb.shape == (64, 257) and abs(fb.max() - 1.0) < 0.05  # unnormalised triangles peak near 1


@needs_librosa
def test_short_window_htk_magnitude_matches_librosa_and_streams():
    np.testing.assert_allclose(
        mel_filterbank(YAMNET_LIKE),
        librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=True, norm=None),
        atol=1e-6,
    )
    for y in (_noise(16000, 3.0), _chirp(16000, 3.0)):
        ours = log_mel(y, YAMNET_LIKE)
        assert np.abs(ours - librosa_log_mel(y, YAMNET_LIKE)).max() <= PARITY_ATOL
        stream = LogMelStream(YAMNET_LIKE)
        parts = [stream.push(y[i : i + 777]) for i in range(0, y.size, 777)]
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), ours)
