"""The torch-free runtime: numbers vs a numpy reference, stream == file, resampling, padding, errors, fuzz, threads."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnx")  # building the test bundle

from edgeemo.cli import main
from edgeemo.errors import AudioError, EdgeemoError
from edgeemo.features import FeatureConfig
from edgeemo.runtime import EmotionModel, Prediction, mood_name, quadrant, quadrant_code, quadrant_label
from edgeemo.runtime.audio import StreamResampler
from tests.runtime_fixtures import (
    SMALL_CFG,
    cached_bundle,
    mood_clip,
    reference_predict,
    write_clip,
)

FAST = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> EmotionModel:
    return EmotionModel.load(cached_bundle(tmp_path_factory, SMALL_CFG), prefer_int8=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    sr = SMALL_CFG.sample_rate
    out = {
        "16k": write_clip(d / "a16k.wav", mood_clip(9.0, sr, seed=1), sr),
        "stereo": write_clip(d / "stereo.wav", mood_clip(7.0, 22050, seed=2, channels=2), 22050),
        "short": write_clip(d / "short.wav", mood_clip(1.2, sr, seed=3), sr),
        "silent": write_clip(d / "silent.wav", np.zeros(3 * sr, np.float32), sr),
        "nan": write_clip(d / "nan.wav", np.r_[mood_clip(3.0, sr), np.nan, np.zeros(10)].astype(np.float32), sr),
        "empty": d / "empty.wav",
        "corrupt": d / "corrupt.mp3",
        "zero_frames": write_clip(d / "zero.wav", np.zeros(0, np.float32), sr),
    }
    out["empty"].write_bytes(b"")
    out["corrupt"].write_bytes(b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 8)
    for rate in (8000, 44100, 96000):
        out[str(rate)] = write_clip(d / f"r{rate}.wav", mood_clip(6.0, rate, seed=rate), rate)
    return out


def _stream_chunks(model, samples, rate, sizes, smoothing=0.0):
    pred = model.stream(rate, smoothing=smoothing)
    chunks, pos, i = [], 0, 0
    while pos < len(samples):
        n = sizes[i % len(sizes)]
        chunks.append(pred.push(samples[pos : pos + n]))
        pos, i = pos + n, i + 1
    chunks.append(pred.flush())
    return (
        np.concatenate([c.times for c in chunks]),
        np.concatenate([c.valence for c in chunks]),
        np.concatenate([c.arousal for c in chunks]),
        pred,
    )


# --- numbers -----------------------------------------------------------------------------
def test_predict_file_matches_numpy_reference(model, clips):
    x, _sr = sf.read(clips["16k"], dtype="float32")
    pred = model.predict_file(clips["16k"])
    times, ref, padded = reference_predict(x, SMALL_CFG)
    assert (
        not padded
        and not pred.padded
        and len(pred) == len(ref) == SMALL_CFG.n_windows((x.size - SMALL_CFG.n_fft) // SMALL_CFG.hop_length + 1)
    )
    np.testing.assert_allclose(pred.times, times)
    np.testing.assert_allclose(pred.valence, ref[:, 0], atol=1e-5)
    np.testing.assert_allclose(pred.arousal, ref[:, 1], atol=1e-5)
    assert np.ptp(pred.valence) > 0.1 and np.ptp(pred.arousal) > 0.1  # the clip moves around the plane
    s = pred.summary
    assert s["valence"] == pytest.approx(ref[:, 0].mean(), abs=1e-6)
    assert s["quadrant"] == quadrant_code(s["valence"], s["arousal"]) and s["windows"] == len(ref)
    assert s["mood"] == mood_name(s["valence"], s["arousal"])
    assert s["duration_s"] == pytest.approx(9.0)


def test_default_feature_config_matches_reference(tmp_path_factory, tmp_path):
    cfg = FeatureConfig()
    model = EmotionModel.load(cached_bundle(tmp_path_factory, cfg), prefer_int8=False)
    x = mood_clip(7.0, cfg.sample_rate, seed=5)
    pred = model.predict_file(write_clip(tmp_path / "c.wav", x, cfg.sample_rate))
    _, ref, _ = reference_predict(x, cfg)
    np.testing.assert_allclose(np.c_[pred.valence, pred.arousal], ref, atol=1e-5)


def test_int8_model_is_close_and_batch_independent(tmp_path_factory, clips):
    model8 = EmotionModel.load(cached_bundle(tmp_path_factory, SMALL_CFG, int8=True))
    assert model8.model_file == "model.int8.onnx"
    x, sr = sf.read(clips["16k"], dtype="float32")
    pred = model8.predict_file(clips["16k"])
    _, ref, _ = reference_predict(x, SMALL_CFG)
    assert np.max(np.abs(np.c_[pred.valence, pred.arousal] - ref)) < 0.05
    _, v, _a, _ = _stream_chunks(model8, x, sr, [1234])
    np.testing.assert_allclose(v, pred.valence, atol=1e-5)


# --- stream == file ------------------------------------------------------------------------
@FAST
@given(
    # any sizes, 1 sample included; the extra 8000 keeps the number of pushes (and the test time) bounded
    sizes=st.lists(st.integers(1, 20000), min_size=1, max_size=12).map(lambda s: [*s, 8000]),
    rate=st.sampled_from(["16k", "44100"]),
)
def test_stream_equals_predict_file_for_any_chunking(model, clips, sizes, rate):
    x, sr = sf.read(clips[rate], dtype="float32")
    pred = model.predict_file(clips[rate])
    t, v, a, _ = _stream_chunks(model, x, sr, sizes)
    np.testing.assert_allclose(t, pred.times)
    np.testing.assert_allclose(v, pred.valence, atol=1e-5)
    np.testing.assert_allclose(a, pred.arousal, atol=1e-5)


@pytest.mark.parametrize("rate", [8000, 44100, 96000])
def test_stream_resamples_like_the_file_path(model, clips, rate):
    x, sr = sf.read(clips[str(rate)], dtype="float32")
    assert sr == rate
    pred = model.predict_file(clips[str(rate)])
    t, v, a, stream = _stream_chunks(model, x, rate, [int(rate * 0.037), 5, int(rate * 0.9)])
    assert len(pred) == SMALL_CFG.n_windows(((6 * 16000) - SMALL_CFG.n_fft) // SMALL_CFG.hop_length + 1)
    np.testing.assert_allclose(t, pred.times)
    np.testing.assert_allclose(v, pred.valence, atol=1e-5)
    np.testing.assert_allclose(a, pred.arousal, atol=1e-5)
    assert stream.seconds == pytest.approx(6.0)
    # and the resampled numbers are those of the reference on the resampled signal
    y = StreamResampler(rate, 16000).push(x, last=True)
    _, ref, _ = reference_predict(y, SMALL_CFG)
    np.testing.assert_allclose(pred.valence, ref[:, 0], atol=1e-5)


def test_stereo_is_downmixed(model, clips):
    x, sr = sf.read(clips["stereo"], dtype="float32")
    assert x.ndim == 2 and x.shape[1] == 2
    pred = model.predict_file(clips["stereo"])
    _, v, _a, _ = _stream_chunks(model, x, sr, [3001, 777])
    np.testing.assert_allclose(v, pred.valence, atol=1e-5)
    mono = model.predict_signal(x.mean(axis=1), sr)
    np.testing.assert_allclose(mono.valence, pred.valence, atol=1e-5)
    np.testing.assert_allclose(mono.arousal, pred.arousal, atol=1e-5)


def test_smoothing_is_an_ema_identical_in_stream_and_file(model, clips):
    raw = model.predict_file(clips["16k"])
    smooth = model.predict_file(clips["16k"], smoothing=0.8)
    ema = [raw.valence[0]]
    for v in raw.valence[1:]:
        ema.append(0.8 * ema[-1] + 0.2 * v)
    np.testing.assert_allclose(smooth.valence, ema, atol=1e-5)
    x, sr = sf.read(clips["16k"], dtype="float32")
    _, v, _, _ = _stream_chunks(model, x, sr, [4321], smoothing=0.8)
    np.testing.assert_allclose(v, smooth.valence, atol=1e-6)
    with pytest.raises(EdgeemoError, match="smoothing"):
        model.stream(16000, smoothing=1.0)


def test_window_hop_longer_than_window(tmp_path_factory):
    cfg = FeatureConfig(n_mels=16, n_frames=8, window_hop_s=0.75)  # 24-frame hop, 8-frame windows
    model = EmotionModel.load(cached_bundle(tmp_path_factory, cfg))
    x = mood_clip(6.0, 16000, seed=9)
    _, ref, _ = reference_predict(x, cfg)
    _, v, a, _ = _stream_chunks(model, x, 16000, [997, 13, 4000])
    np.testing.assert_allclose(np.c_[v, a], ref, atol=1e-5)


# --- short, silent, bad --------------------------------------------------------------------
def test_short_clip_is_padded_and_flagged(model, clips):
    x, _ = sf.read(clips["short"], dtype="float32")
    pred = model.predict_file(clips["short"])
    _, ref, padded = reference_predict(x, SMALL_CFG)
    assert padded and pred.padded and pred.summary["padded"] and len(pred) == 1
    np.testing.assert_allclose(np.c_[pred.valence, pred.arousal], ref, atol=1e-5)
    stream = model.stream(16000)
    assert len(stream.push(x)) == 0
    last = stream.flush()
    assert last.padded and len(last) == 1 and stream.padded
    exact = model.predict_signal(mood_clip(SMALL_CFG.window_seconds, 16000), 16000)
    assert len(exact) == 1 and not exact.padded


def test_nan_samples_raise_audio_error(model, clips):
    stream = model.stream(16000)
    with pytest.raises(AudioError, match="NaN"):
        stream.push(np.array([0.1, np.nan, 0.2], np.float32))
    with pytest.raises(AudioError, match="NaN"):
        stream.push(np.array([[0.1, np.inf]], np.float32))
    with pytest.raises(AudioError, match=r"nan.wav: .*NaN"):
        model.predict_file(clips["nan"])


@pytest.mark.parametrize(
    "name, message",
    [
        ("silent", "all silent"),
        ("empty", "empty file"),
        ("corrupt", "unsupported or corrupt"),
        ("zero_frames", "no audio samples"),
    ],
)
def test_bad_files_give_one_line_errors(model, clips, name, message):
    with pytest.raises(AudioError, match=message) as e:
        model.predict_file(clips[name])
    assert "\n" not in str(e.value) and str(clips[name]) in str(e.value)


def test_missing_file(model, tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        model.predict_file(tmp_path / "nope.wav")


def test_push_after_flush_and_reset(model, clips):
    x, sr = sf.read(clips["44100"], dtype="float32")  # with a resampler to reset too
    stream = model.stream(sr)
    first = stream.push(x)
    stream.flush()
    with pytest.raises(EdgeemoError, match="flushed"):
        stream.push(x[:10])
    stream.reset()
    again = stream.push(x)
    np.testing.assert_array_equal(first.valence, again.valence)


def test_predict_windows_checks_input(model):
    n_mels, n_frames = SMALL_CFG.shape
    ok = np.zeros((2, 1, n_mels, n_frames), np.float32)
    assert model.predict_windows(ok).shape == (2, 2)
    assert model.predict_windows(ok[:0]).shape == (0, 2)
    assert model.predict_windows(np.zeros((130, 1, n_mels, n_frames))).shape == (130, 2)  # float64, >1 batch
    for bad, msg in [
        (ok[0], "expects shape"),
        (np.zeros((1, 1, n_mels + 1, n_frames), np.float32), "expects shape"),
        (ok.astype(np.int32), "dtype"),
        (np.full_like(ok, np.nan), "NaN"),
        ([[1.0]], "numpy array"),
    ]:
        with pytest.raises(EdgeemoError, match=msg):
            model.predict_windows(bad)


def test_push_accepts_int_pcm_and_channels(model):
    x = mood_clip(5.0, 16000, seed=4)
    pcm = np.round(x * 32767).astype(np.int16)
    a = model.predict_signal(pcm, 16000)
    b = model.predict_signal(pcm.astype(np.float32) / 32768, 16000)
    np.testing.assert_allclose(a.valence, b.valence, atol=1e-6)
    with pytest.raises(AudioError, match="channels-first"):
        model.stream(16000).push(np.zeros((2, 16000), np.float32))
    with pytest.raises(AudioError, match="out of range"):
        model.stream(16000).push(np.full(10, 1e9))
    with pytest.raises(AudioError, match="sample rate"):
        model.stream(0)


def test_quadrants():
    points = [(0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5)]
    assert [quadrant_code(v, a) for v, a in points] == ["Q1", "Q2", "Q3", "Q4"]
    assert [mood_name(v, a) for v, a in points] == ["happy", "tense", "sad", "calm"]
    assert quadrant_code(0.0, 0.0) == "Q1" and mood_name(0.0, -0.1) == "calm" and quadrant_code(-1e-9, 0.0) == "Q2"
    with pytest.raises(ValueError, match="NaN"):
        quadrant_code(float("nan"), 0.5)
    # the older names still answer what they always did
    assert [quadrant_label(v, a) for v, a in points] == ["Q1", "Q2", "Q3", "Q4"]
    assert [quadrant(v, a) for v, a in points] == ["happy", "tense", "sad", "calm"]


def test_prediction_serialisation(model, clips):
    pred = model.predict_file(clips["16k"])
    d = json.loads(json.dumps(pred.to_dict()))
    assert d["path"] == str(clips["16k"]) and len(d["windows"]) == len(pred)
    s = d["summary"]
    assert s["quadrant"] == quadrant_code(s["valence"], s["arousal"]) and s["mood"] == mood_name(
        s["valence"], s["arousal"]
    )
    assert [(w["quadrant"], w["mood"]) for w in d["windows"]] == [
        (quadrant_code(w["valence"], w["arousal"]), mood_name(w["valence"], w["arousal"])) for w in d["windows"]
    ]
    rows = pred.to_csv_rows()
    assert list(rows[0]) == ["file", "time_s", "valence", "arousal", "quadrant", "mood"]
    assert {r["quadrant"] for r in rows} <= {"Q1", "Q2", "Q3", "Q4"} and rows[0]["mood"] == pred.moods()[0]
    assert len(rows) == len(pred) and float(rows[0]["valence"]) == pytest.approx(pred.valence[0], abs=1e-6)
    assert isinstance(pred, Prediction)


# --- fuzz ----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=3000), header=st.sampled_from([b"", b"RIFF", b"ID3\x03", b"OggS", b"fLaC"]))
def test_random_bytes_as_a_file_only_raise_edgeemo_errors(model, tmp_path, data, header):
    path = tmp_path / "fuzz.bin"
    path.write_bytes(header + data)
    try:
        model.predict_file(path)
    except EdgeemoError as exc:
        assert "\n" not in str(exc)


_arrays = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3000).map(
        lambda v: np.array(v, np.float32)
    ),
    st.lists(st.floats(-1e12, 1e12), max_size=200).map(np.array),
    st.tuples(st.integers(0, 50), st.integers(0, 80)).map(lambda s: np.random.default_rng(s[0]).normal(0, 0.3, s)),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)).map(np.zeros),
    st.sampled_from(
        [
            np.float32(0.5),
            np.array(["a", "b"]),
            np.zeros(4, np.complex64),
            np.zeros(5, np.uint8),
            np.zeros(5, bool),
            [[1.0], [1.0, 2.0]],
            None,
            "samples",
            np.full(70000, 0.999, np.float32),
            np.full((100, 2), 999.0),
            np.arange(5000, dtype=np.int16),
        ]
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=st.lists(_arrays, min_size=1, max_size=4), rate=st.sampled_from([8000, 16000, 44100]))
def test_push_random_arrays_only_raises_edgeemo_errors(model, arrays, rate):
    stream = model.stream(rate)
    for arr in arrays:
        try:
            out = stream.push(arr)
            assert np.all(np.abs(out.valence) <= 1) and np.all(np.abs(out.arousal) <= 1)
        except EdgeemoError as exc:
            assert "\n" not in str(exc)
    stream.flush()


# --- threads -------------------------------------------------------------------------------
def test_one_model_shared_by_four_threads(model):
    signals = [mood_clip(8.0, 22050, seed=20 + i) for i in range(4)]
    sequential = [_stream_chunks(model, s, 22050, [2205])[1:3] for s in signals]
    results: list = [None] * 4
    errors: list = []
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = _stream_chunks(model, signals[i], 22050, [1000 + 397 * i, 211])[1:3]
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, sequential, strict=True):
        np.testing.assert_allclose(got[0], want[0], atol=1e-6)
        np.testing.assert_allclose(got[1], want[1], atol=1e-6)


# --- imports -------------------------------------------------------------------------------
def test_import_runtime_pulls_no_heavy_modules():
    code = (
        "import sys, edgeemo.runtime, edgeemo.runtime.live, edgeemo.runtime.mic, edgeemo.runtime.plot, edgeemo.bundle;"
        "heavy = [m for m in ('torch', 'timm', 'librosa', 'matplotlib', 'onnx', 'onnxruntime', 'sounddevice')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


# --- CLI -----------------------------------------------------------------------------------
def test_cli_predict_good_and_bad_files(tmp_path_factory, clips, model):
    bundle = str(cached_bundle(tmp_path_factory, SMALL_CFG))
    runner = CliRunner()
    res = runner.invoke(main, ["predict", str(clips["16k"]), str(clips["corrupt"]), "--bundle", bundle])
    assert res.exit_code == 1
    assert "mean" in res.stdout and str(clips["16k"]) in res.stdout
    err_lines = res.stderr.strip().splitlines()
    assert len(err_lines) == 2 and err_lines[0].startswith("error: ") and "corrupt.mp3" in err_lines[0]
    assert err_lines[1] == "1 of 2 input(s) failed"

    res = runner.invoke(main, ["predict", str(clips["16k"]), str(clips["short"]), "--bundle", bundle, "-h"])
    assert res.exit_code == 0
    res = runner.invoke(
        main, ["predict", str(clips["16k"]), str(clips["short"]), "--bundle", bundle, "--format", "csv"]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    want = model.predict_file(clips["16k"])
    assert len(rows) == len(want) + 1
    assert float(rows[3]["arousal"]) == pytest.approx(want.arousal[3], abs=1e-5)

    out = tmp_path_factory.mktemp("cli") / "p.json"
    res = runner.invoke(
        main,
        ["predict", str(clips["16k"]), "--bundle", bundle, "--format", "json", "--out", str(out), "--smoothing", "0.5"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data[0]["smoothing"] == 0.5 and len(data[0]["windows"]) == len(want)


def test_cli_predict_plot(tmp_path_factory, clips, tmp_path):
    pytest.importorskip("matplotlib")
    bundle = str(cached_bundle(tmp_path_factory, SMALL_CFG))
    res = CliRunner().invoke(
        main, ["predict", str(clips["16k"]), str(clips["short"]), "--bundle", bundle, "--plot", str(tmp_path / "t.png")]
    )
    assert res.exit_code == 0, res.output
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["t_a16k.png", "t_short.png"]
    assert (tmp_path / "t_a16k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_predict_errors_exit_2_in_one_line(tmp_path, clips):
    res = CliRunner().invoke(main, ["predict", str(clips["16k"]), "--bundle", str(tmp_path / "none")])
    assert res.exit_code == 2 and res.output.startswith("error: no bundle at") and res.output.count("\n") == 1


# --- examples ------------------------------------------------------------------------------
def test_examples_run(tmp_path_factory, clips, tmp_path):
    root = Path(__file__).resolve().parent.parent / "examples"
    bundle = str(cached_bundle(tmp_path_factory, SMALL_CFG))
    run = [sys.executable, str(root / "embed_minimal.py"), str(clips["16k"]), bundle]
    out = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "valence" in out and "->" in out
    run = [sys.executable, str(root / "mood_callback.py"), str(clips["stereo"]), "--bundle", bundle]
    out = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "mood start ->" in out and "final mood:" in out
    pytest.importorskip("matplotlib")
    png = tmp_path / "t.png"
    run = [sys.executable, str(root / "plot_trajectory.py"), str(clips["16k"]), str(png), "--bundle", bundle]
    subprocess.run(run, capture_output=True, text=True, check=True)
    assert png.read_bytes()[:4] == b"\x89PNG"
