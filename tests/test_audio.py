"""Audio decoding, downmix, resampling, block streaming, excerpts and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeemo.errors import AudioError, EdgeemoError
from edgeemo.runtime.audio import (
    SILENCE_PEAK,
    StreamResampler,
    audio_info,
    check_finite,
    iter_audio_blocks,
    load_audio,
    resample,
    to_mono,
    write_wav,
)


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)])


def _amp(x: np.ndarray) -> float:
    """Amplitude of a sine from its RMS."""
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)) * np.sqrt(2))


def _can_write(fmt: str) -> bool:
    if fmt.upper() not in sf.available_formats():
        return False
    try:
        import io

        buf = io.BytesIO()
        sf.write(buf, np.zeros(4410, np.float32), 44100, format=fmt.upper())
        return buf.tell() > 0
    except Exception:
        return False


def _assert_one_line_naming(exc: EdgeemoError, path: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert path.name in msg
    assert exc.path is not None and Path(exc.path).name == path.name


# --- formats ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ext, lossless",
    [("wav", True), ("flac", True), ("ogg", False), ("mp3", False)],
)
def test_formats_decode_to_the_right_rate_and_length(tmp_path: Path, ext: str, lossless: bool):
    if not _can_write(ext):
        pytest.skip(f"soundfile cannot write {ext} here")
    src = _sine(440.0, 44100, 2.0)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, src, 44100)
    sr, duration, channels = audio_info(path)
    assert (sr, channels) == (44100, 1)
    assert duration == pytest.approx(2.0, abs=0.05)
    native = load_audio(path, 44100)
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    if lossless:
        assert native.size == src.size and y.size == 32000
        np.testing.assert_allclose(native, src, atol=1e-4)  # 16-bit / 24-bit quantisation
        np.testing.assert_allclose(y[500:-500], _sine(440.0, 16000, 2.0)[500:-500], atol=2e-3)
    else:
        assert abs(y.size - 32000) <= 0.02 * 32000
        assert _peak_hz(y, 16000) == pytest.approx(440.0, abs=2.0)
        assert _amp(y[2000:-2000]) == pytest.approx(0.5, rel=0.05)


def test_stereo_downmix_is_the_channel_mean(tmp_path: Path):
    rng = np.random.default_rng(1)
    stereo = (0.3 * rng.standard_normal((16000, 2))).astype(np.float32)
    stereo[:, 1] += _sine(300.0, 16000, 1.0)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    assert audio_info(path) == (16000, 1.0, 2)
    y = load_audio(path, 16000)  # no resampling: exact
    np.testing.assert_allclose(y, stereo.mean(axis=1), rtol=0, atol=1e-7)
    # through the resampler: equals the resampled mean
    y44 = load_audio(path, 44100)
    np.testing.assert_allclose(y44, resample(stereo.mean(axis=1), 16000, 44100), rtol=0, atol=1e-6)


def test_to_mono_shapes():
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = to_mono(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [1.0, 4.0, 7.0, 10.0])
    np.testing.assert_array_equal(to_mono(x[:, :1]), x[:, 0].astype(np.float32))
    np.testing.assert_array_equal(to_mono(x[:, 0]), x[:, 0].astype(np.float32))
    with pytest.raises(AudioError, match="shape"):
        to_mono(np.zeros((2, 2, 2)))


# --- resampling ------------------------------------------------------------------------------
def test_resample_keeps_frequency_and_amplitude_of_a_1khz_sine():
    y = resample(_sine(1000.0, 44100, 1.0, amp=0.8), 44100, 16000)
    assert y.dtype == np.float32 and y.size == 16000
    assert _peak_hz(y, 16000) == pytest.approx(1000.0, abs=1.0)
    mid = y[1000:-1000]
    assert _amp(mid) == pytest.approx(0.8, rel=1e-3)
    np.testing.assert_allclose(mid, _sine(1000.0, 16000, 1.0, amp=0.8)[1000:-1000], atol=2e-3)  # same phase


def test_resample_passes_7khz_and_removes_tones_above_the_new_nyquist():
    assert _amp(resample(_sine(7000.0, 44100, 1.0), 44100, 16000)[1000:-1000]) == pytest.approx(0.5, rel=0.01)
    for freq in (8500.0, 12000.0, 20000.0):
        x = _sine(freq, 44100, 1.0)
        y = resample(x, 44100, 16000)
        assert _amp(y[1000:-1000]) < 1e-4 * _amp(x), freq  # anti-aliasing filter: nothing folds back
    # what the filter prevents: naive decimation folds 12 kHz down to 4 kHz at full amplitude
    x = _sine(12000.0, 44100, 1.0)
    naive = x[np.round(np.arange(16000) * 44100 / 16000).astype(int).clip(max=x.size - 1)]
    assert _amp(naive) > 0.3
    assert _peak_hz(naive, 16000) == pytest.approx(4000.0, abs=20.0)


def test_resample_identity_empty_and_bad_rates():
    x = _sine(100.0, 16000, 0.1)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    assert resample(np.zeros(0), 44100, 16000).size == 0
    with pytest.raises(AudioError, match="positive"):
        resample(x, 0, 16000)
    with pytest.raises(AudioError, match="positive"):
        StreamResampler(44100, -1)


@pytest.mark.parametrize("chunk", [1, 7, 499, 4410, 100_000])
def test_stream_resampler_chunks_equal_one_big_chunk(chunk: int):
    x = (0.2 * np.random.default_rng(2).standard_normal(44100)).astype(np.float32)
    one = StreamResampler(44100, 16000)
    whole = np.concatenate([one.push(x), one.push(np.zeros(0, np.float32), last=True)])
    assert abs(whole.size - 16000) <= 1
    s = StreamResampler(44100, 16000)
    parts = [s.push(x[i : i + chunk]) for i in range(0, x.size, chunk)]
    parts.append(s.push(np.zeros(0, np.float32), last=True))
    out = np.concatenate(parts)
    assert out.dtype == np.float32 and out.shape == whole.shape
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole, resample(x, 44100, 16000), rtol=0, atol=1e-6)  # stream == one-shot


def test_stream_resampler_passthrough_and_reset():
    x = _sine(200.0, 16000, 0.2)
    same = StreamResampler(16000, 16000)
    np.testing.assert_array_equal(same.push(x[:100]), x[:100])
    same.reset()  # no-op, no error
    s = StreamResampler(44100, 16000)
    src = _sine(440.0, 44100, 0.5)
    first = np.concatenate([s.push(src), s.push(np.zeros(0, np.float32), last=True)])
    s.reset()
    second = np.concatenate([s.push(src), s.push(np.zeros(0, np.float32), last=True)])
    np.testing.assert_allclose(second, first, rtol=0, atol=1e-7)  # reset leaves no state behind


# --- block iteration and excerpts -------------------------------------------------------------
@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    sr = 44100
    x = (0.2 * rng.standard_normal(sr * 12) + _sine(523.0, sr, 12.0, 0.3)).astype(np.float32)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    return path, x


@pytest.mark.parametrize("block_s", [10.0, 0.37])
def test_iter_audio_blocks_concatenates_to_load_audio(long_wav: tuple[Path, np.ndarray], block_s: float):
    path, x = long_wav
    whole = load_audio(path, 16000)
    assert abs(whole.size - 12 * 16000) <= 1
    blocks = list(iter_audio_blocks(path, 16000, block_s=block_s))
    assert len(blocks) >= (2 if block_s == 10.0 else 30)
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=0, atol=1e-6)
    native = np.concatenate(list(iter_audio_blocks(path, 44100, block_s=block_s)))
    np.testing.assert_array_equal(native, x)


def test_excerpts(long_wav: tuple[Path, np.ndarray]):
    path, x = long_wav
    sr = 44100
    np.testing.assert_array_equal(load_audio(path, sr, start_s=2.5, end_s=4.0), x[round(2.5 * sr) : 4 * sr])
    np.testing.assert_array_equal(load_audio(path, sr, start_s=11.0), x[11 * sr :])
    np.testing.assert_array_equal(load_audio(path, sr, end_s=0.5), x[: sr // 2])
    np.testing.assert_array_equal(load_audio(path, sr, start_s=10.0, end_s=99.0), x[10 * sr :])  # clipped at the end
    # resampled: same length as the span, and the interior matches the whole file's resampling
    full = load_audio(path, 16000)
    ex = load_audio(path, 16000, start_s=3.0, end_s=5.0)
    assert ex.size == 32000
    np.testing.assert_allclose(ex[300:-300], full[3 * 16000 + 300 : 5 * 16000 - 300], rtol=0, atol=1e-4)


def test_excerpt_past_the_end_raises(long_wav: tuple[Path, np.ndarray]):
    path, _ = long_wav
    with pytest.raises(AudioError, match="past the end") as info:
        load_audio(path, 16000, start_s=20.0)
    _assert_one_line_naming(info.value, path)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, 16000, start_s=12.0, end_s=13.0)


# --- bad input -------------------------------------------------------------------------------
def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {"missing": tmp / "missing.wav", "directory": tmp / "a_dir.wav"}
    files["directory"].mkdir()
    files["zero_bytes"] = tmp / "zero.wav"
    files["zero_bytes"].write_bytes(b"")
    rng = np.random.default_rng(1234)
    files["random_wav"] = tmp / "noise_bytes.wav"
    files["random_wav"].write_bytes(rng.integers(0, 256, 6000, dtype=np.uint8).tobytes())
    files["random_mp3"] = tmp / "noise_bytes.mp3"
    files["random_mp3"].write_bytes(rng.integers(0, 256, 6000, dtype=np.uint8).tobytes())
    files["text"] = tmp / "notes.txt"
    files["text"].write_text("path,valence,arousal\nthis is not audio\n")
    good = tmp / "good.wav"
    write_wav(good, _sine(440.0, 16000, 1.0), 16000)
    files["header_only"] = tmp / "header_only.wav"
    files["header_only"].write_bytes(good.read_bytes()[:44])
    files["cut_header"] = tmp / "cut_header.wav"
    files["cut_header"].write_bytes(good.read_bytes()[:30])
    return files


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("directory", "directory"),
        ("zero_bytes", "empty"),
        ("random_wav", "corrupt"),
        ("random_mp3", "corrupt"),
        ("text", "corrupt"),
        ("header_only", "no audio samples"),
        ("cut_header", "corrupt"),
    ],
)
def test_bad_files_raise_one_line_audio_errors(tmp_path: Path, kind: str, message: str):
    path = _bad_files(tmp_path)[kind]
    for call in (
        lambda: load_audio(path, 16000),
        lambda: list(iter_audio_blocks(path, 16000)),
    ):
        with pytest.raises(AudioError, match=message) as info:
            call()
        _assert_one_line_naming(info.value, path)
    if kind != "header_only":  # its header is valid; only decoding finds no samples
        with pytest.raises(AudioError):
            audio_info(path)


def test_truncated_wav_decodes_partially_or_raises_audio_error(tmp_path: Path):
    """The header claims 2 s; only ~1 s of data follows. Never a non-AudioError exception."""
    src = _sine(440.0, 16000, 2.0)
    full = tmp_path / "full.wav"
    write_wav(full, src, 16000)
    data = full.read_bytes()
    for keep in (len(data) // 2, len(data) // 2 + 1, 45, 46):
        path = tmp_path / f"trunc_{keep}.wav"
        path.write_bytes(data[:keep])
        try:
            y = load_audio(path, 16000)
        except AudioError as exc:
            _assert_one_line_naming(exc, path)
            continue
        n = (keep - 44) // 2  # whole 16-bit samples actually present
        assert 0 < y.size <= n
        np.testing.assert_allclose(y, src[: y.size], atol=1e-4)  # the samples present are decoded right
        if keep == len(data) // 2:
            assert y.size >= n - 8


def test_truncated_compressed_files_never_raise_other_errors(tmp_path: Path):
    x = _sine(440.0, 44100, 2.0)
    for ext in ("flac", "ogg", "mp3"):
        if not _can_write(ext):
            continue
        full = tmp_path / f"full.{ext}"
        sf.write(full, x, 44100)
        data = full.read_bytes()
        path = tmp_path / f"trunc.{ext}"
        path.write_bytes(data[: len(data) // 2])
        try:
            y = load_audio(path, 16000)
        except AudioError as exc:
            _assert_one_line_naming(exc, path)
        else:
            assert 0 < y.size < 32000 and np.all(np.isfinite(y))


def test_all_silent_file(tmp_path: Path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.full(16000, SILENCE_PEAK / 2, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent") as info:
        load_audio(path, 16000)
    _assert_one_line_naming(info.value, path)
    y = load_audio(path, 16000, allow_silent=True)
    assert y.size == 16000 and np.abs(y).max() < SILENCE_PEAK
    assert len(list(iter_audio_blocks(path, 16000))) >= 1  # streams may be quiet
    # just above the threshold is not silent
    sf.write(path, np.full(16000, SILENCE_PEAK * 2, np.float32), 16000, subtype="FLOAT")
    assert load_audio(path, 16000).size == 16000


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_wav_with_nan_or_inf_samples(tmp_path: Path, bad: float):
    x = _sine(440.0, 16000, 3.0)
    x[[100, 40000]] = bad  # one in the first block, one in a later block
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/inf") as info:
        load_audio(path, 16000)
    _assert_one_line_naming(info.value, path)
    y = x.copy()
    y[100] = 0.0  # only the late one: caught in a later block
    sf.write(path, y, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 NaN/inf"):
        list(iter_audio_blocks(path, 16000, block_s=0.5))


def test_check_finite():
    check_finite(np.zeros(4, np.float32), "x.wav")
    with pytest.raises(AudioError, match=r"x\.wav: 2 NaN/inf"):
        check_finite(np.array([0.0, np.nan, np.inf]), "x.wav")


def test_write_wav_clips_and_writes_pcm16(tmp_path: Path):
    path = tmp_path / "w.wav"
    write_wav(path, np.array([0.0, 0.5, 2.0, -3.0, -0.25]), 22050)
    info = sf.info(str(path))
    assert info.samplerate == 22050 and info.subtype == "PCM_16" and info.channels == 1
    data, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(data, [0.0, 0.5, 32767 / 32768, -1.0, -0.25], atol=1 / 32768)
