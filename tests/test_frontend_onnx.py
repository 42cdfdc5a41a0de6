"""The log-mel front end as ONNX and the raw-audio model (edgeemo.exporting.frontend / e2e, edgeemo.rawaudio).

Parity with ``features.log_mel`` on synthesised and real audio, the raw-audio model against
``features.py`` + the student, the ORT-format copy, bundle verification (hashes and the
agreement probe) and the Python runtime's ``model="e2e"`` path.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

import onnxruntime as ort

from edgeemo.bundle import RAW_AUDIO_TOLERANCE, verify_bundle, write_bundle
from edgeemo.errors import BundleError, EdgeemoError
from edgeemo.exporting.e2e import build_raw_audio_model
from edgeemo.exporting.frontend import frontend_model
from edgeemo.features import FeatureConfig, frame_windows, log_mel
from edgeemo.pretrained.yamnet import YAMNET_FEATURES
from edgeemo.rawaudio import PcmWindower, hop_samples, pcm_windows, probe_signal
from edgeemo.runtime import EmotionModel
from edgeemo.runtime.audio import iter_audio_blocks
from tests.e2e_fixtures import e2e_reference_bundle, real_clips, write_wav_16k
from tests.runtime_fixtures import mood_clip

MEL_TOL = 1e-4  # the bound for the in-graph log-mel; measured 0 (bit-identical) on 4Q clips
E2E_TOL = 1e-3  # the bound for the raw-audio model vs features.py + the student; measured 0 on 3124 windows


def session(model_or_path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def frontend_diff(signal: np.ndarray, cfg: FeatureConfig, sess=None) -> float:
    ref = frame_windows(log_mel(signal, cfg), cfg)
    got = (sess or session(frontend_model(cfg))).run(None, {"pcm": pcm_windows(signal, cfg)})[0]
    assert got.shape == (ref.shape[0], 1, cfg.n_mels, cfg.n_frames)
    return float(np.max(np.abs(got[:, 0] - ref)))


def loud_and_quiet(cfg: FeatureConfig, seconds: float = 6.0) -> np.ndarray:
    """A near-full-scale tone beside -100 dB noise and digital silence: the hardest case for float error."""
    rng = np.random.default_rng(3)
    n = round(seconds * cfg.sample_rate)
    t = np.arange(n) / cfg.sample_rate
    x = 0.9 * np.sin(2 * np.pi * 1000.0 * t) + 1e-5 * rng.standard_normal(n)
    x[n // 2 : n // 2 + cfg.window_samples // 3] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(),
        # other framings: hop above n_fft/2 and a non-power-of-two FFT (2-stage split 20 x 20), another rate
        FeatureConfig(
            sample_rate=22050,
            n_fft=400,
            hop_length=300,
            n_mels=40,
            fmax=11025.0,
            n_frames=50,
            window_hop_s=300 / 22050 * 7,
        ),
        FeatureConfig(n_fft=512, hop_length=128, n_mels=48, n_frames=96, window_hop_s=0.256),
        YAMNET_FEATURES,  # a 400-sample window in a 512-point FFT, HTK bands, magnitude, natural log
    ],
    ids=["default", "22k-400", "512-128", "yamnet"],
)
def test_frontend_matches_log_mel_on_synthesised_audio(cfg):
    sess = session(frontend_model(cfg))
    for signal in (mood_clip(9.0, cfg.sample_rate, seed=1), probe_signal(cfg), loud_and_quiet(cfg)):
        assert frontend_diff(signal, cfg, sess) <= MEL_TOL


def test_frontend_graph_holds_only_the_ops_its_config_needs():
    def ops(cfg: FeatureConfig) -> list[str]:
        return [n.op_type for n in frontend_model(cfg).graph.node]

    default, yamnet = ops(FeatureConfig()), ops(YAMNET_FEATURES)
    assert "Identity" not in default and "Identity" not in yamnet
    assert "Sqrt" not in default and default.count("Pad") == 1  # the signal's pad only
    assert yamnet.count("Sqrt") == 1 and yamnet.count("Pad") == 2  # plus each frame's pad to n_fft
    assert len(yamnet) == len(default) + 2


@pytest.mark.realdata
def test_frontend_matches_log_mel_on_real_clips():
    clips = real_clips(3)
    if not clips:
        pytest.skip("no 4Q clips in ../shared/data/4q-dev (real-data parity)")
    cfg = FeatureConfig()
    sess = session(frontend_model(cfg))
    for clip in clips:
        signal = np.concatenate(list(iter_audio_blocks(clip, cfg.sample_rate)))
        assert frontend_diff(signal, cfg, sess) <= MEL_TOL, clip.name


def test_pcm_windows_cut_the_same_audio_as_frame_windows_and_stream_in_any_chunks():
    cfg = FeatureConfig()
    x = mood_clip(7.3, cfg.sample_rate, seed=2)
    w = pcm_windows(x, cfg)
    assert w.shape == (frame_windows(log_mel(x, cfg), cfg).shape[0], cfg.window_samples)
    np.testing.assert_array_equal(w[2], x[2 * 8000 : 2 * 8000 + cfg.window_samples])
    win = PcmWindower(cfg)
    got = [win.push(x[s : s + 777]) for s in range(0, x.size, 777)] + [win.flush()]
    np.testing.assert_array_equal(np.concatenate(got), w)
    short = PcmWindower(cfg)
    assert short.push(x[:1000]).shape[0] == 0
    padded = short.flush()
    assert short.padded and padded.shape == (1, cfg.window_samples) and not padded[0, 1000:].any()
    np.testing.assert_array_equal(pcm_windows(x[:1000], cfg), padded)


def test_raw_audio_model_equals_log_mel_plus_student():
    """Front end + a float student (the bundle check's linear test model): the composed graph adds ~1e-6."""
    from tests.runtime_fixtures import make_test_bundle

    cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        bundle = make_test_bundle(tmp)
        raw = build_raw_audio_model(bundle / "model.onnx", cfg, tmp / "raw.onnx")
        x = mood_clip(10.0, cfg.sample_rate, seed=4)
        ref = session(bundle / "model.onnx").run(None, {"mel": frame_windows(log_mel(x, cfg), cfg)[:, None]})[0]
        got = session(raw).run(None, {"pcm": pcm_windows(x, cfg)})[0]
    assert got.shape == ref.shape == (pcm_windows(x, cfg).shape[0], 2)
    assert np.max(np.abs(got - ref)) <= 1e-5


# ----------------------------------------------------------------------------- the reference bundle
@pytest.fixture(scope="module")
def e2e_bundle():
    return e2e_reference_bundle()


def test_bundle_has_verified_raw_audio_files_and_card(e2e_bundle):
    bundle = verify_bundle(e2e_bundle)  # hashes, embedded cards, agreement probe
    card = json.loads((e2e_bundle / "card.json").read_text())
    raw = card["raw_audio_model"]
    cfg = FeatureConfig.from_dict(card["feature_config"])  # the contract follows the student's front end
    assert raw["files"] == ["model.e2e.int8.onnx", "model.e2e.int8.ort"] and raw["student"] == "model.int8.onnx"
    assert raw["input"]["shape"] == [None, cfg.window_samples] and raw["input"]["sample_rate"] == cfg.sample_rate
    assert raw["hop_samples"] == hop_samples(cfg) and set(raw["files"]) <= set(bundle.files)
    for name in raw["files"]:
        sess = session(e2e_bundle / name)
        assert [i.name for i in sess.get_inputs()] == ["pcm"] and sess.get_inputs()[0].shape[1] == cfg.window_samples
        meta = json.loads(sess.get_modelmeta().custom_metadata_map["edgeemo_card"])
        assert meta["raw_audio_model"] == raw  # the ORT copy keeps the embedded card
    from click.testing import CliRunner

    from edgeemo.cli import main

    result = CliRunner().invoke(main, ["bundle", "check", str(e2e_bundle)])
    assert result.exit_code == 0 and "raw-audio model: model.e2e.int8.onnx + model.e2e.int8.ort" in result.output


def test_bundle_check_refuses_a_tampered_or_disagreeing_raw_audio_model(e2e_bundle, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(e2e_bundle, bad)
    with open(bad / "model.e2e.int8.ort", "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\0" * 10)
    with pytest.raises(BundleError, match=r"model.e2e.int8.ort does not match its card hash"):
        verify_bundle(bad)
    # a front end for another log scaling, written with correct hashes: only the agreement probe can see it
    card = {k: v for k, v in json.loads((e2e_bundle / "card.json").read_text()).items() if k != "files"}
    cfg = FeatureConfig.from_dict(card["feature_config"])
    wrong = build_raw_audio_model(
        e2e_bundle / "model.int8.onnx", dataclasses.replace(cfg, db_scale=cfg.db_scale * 1.25), tmp_path / "w.onnx"
    )
    models = {n: e2e_bundle / n for n in ("model.onnx", "model.int8.onnx")}
    out = write_bundle(tmp_path / "disagrees", {**models, "model.e2e.int8.onnx": wrong}, card)
    with pytest.raises(BundleError, match=rf"disagrees with its student by .* \(> {RAW_AUDIO_TOLERANCE:g}\)"):
        verify_bundle(out)


def test_runtime_e2e_path_matches_the_default_path_on_synthesised_audio(e2e_bundle, tmp_path):
    default = EmotionModel.load(e2e_bundle)
    e2e, ort_copy = EmotionModel.load(e2e_bundle, model="e2e"), EmotionModel.load(e2e_bundle, model="e2e-ort")
    assert e2e.model_file == "model.e2e.int8.onnx" and ort_copy.model_file == "model.e2e.int8.ort"
    cfg = default.feature_config
    wav = write_wav_16k(tmp_path / "mood.wav", mood_clip(12.0, cfg.sample_rate, seed=5), cfg)
    for smoothing in (0.0, 0.7):
        ref = default.predict_file(wav, smoothing=smoothing)
        for model in (e2e, ort_copy):
            got = model.predict_file(wav, smoothing=smoothing)
            assert len(got) == len(ref) == 16 and got.padded is False
            np.testing.assert_allclose(got.times, ref.times)
            assert np.max(np.abs(got.valence - ref.valence)) <= E2E_TOL
            assert np.max(np.abs(got.arousal - ref.arousal)) <= E2E_TOL
    short = e2e.predict_signal(mood_clip(1.5, 44100, seed=6), 44100)
    assert len(short) == 1 and short.padded and short.summary["mood"] in ("happy", "tense", "sad", "calm")
    assert short.summary["quadrant"] in ("Q1", "Q2", "Q3", "Q4")


def test_runtime_e2e_path_errors(e2e_bundle, tmp_path):
    e2e = EmotionModel.load(e2e_bundle, model="e2e")
    n = e2e.feature_config.window_samples
    with pytest.raises(EdgeemoError, match="takes PCM windows"):
        e2e.predict_windows(np.zeros((1, 1, 64, 128), np.float32))
    with pytest.raises(EdgeemoError, match=rf"shape \(batch, {n}\)"):
        e2e.predict_pcm(np.zeros((1, 1000), np.float32))
    with pytest.raises(EdgeemoError, match="NaN/inf"):
        e2e.predict_pcm(np.full((1, n), np.nan, np.float32))
    with pytest.raises(EdgeemoError, match="streams run the log-mel model"):
        e2e.stream(16000)
    with pytest.raises(EdgeemoError, match="predict_pcm needs the raw-audio model"):
        EmotionModel.load(e2e_bundle).predict_pcm(np.zeros((1, n), np.float32))
    with pytest.raises(EdgeemoError, match="model must be one of"):
        EmotionModel.load(e2e_bundle, model="bogus")
    from tests.runtime_fixtures import make_test_bundle

    with pytest.raises(BundleError, match="has no raw-audio model"):
        EmotionModel.load(make_test_bundle(tmp_path), model="e2e")


@pytest.mark.realdata
def test_plain_onnxruntime_on_real_pcm_windows_reproduces_predict_file(e2e_bundle):
    """The issue's check: ORT on 16 kHz PCM windows vs ``EmotionModel.load().predict_file()`` (features.py + int8).

    Both front ends compute in float64 and round once to float32, so the int8 student's first QuantizeLinear
    sees the same codes: measured identical outputs on 60 4Q clips (3124 windows). (With a float32 mel
    product and log on either side, 1.8 % of windows moved by 1-6 int8 output steps of 0.0078.)
    """
    clips = real_clips(3)
    if not clips:
        pytest.skip("no 4Q clips in ../shared/data/4q-dev")
    default, fp32 = EmotionModel.load(e2e_bundle), EmotionModel.load(e2e_bundle, prefer_int8=False)
    cfg = default.feature_config
    raw8 = session(e2e_bundle / "model.e2e.int8.onnx")
    raw_ort = session(e2e_bundle / "model.e2e.int8.ort")
    with tempfile.TemporaryDirectory() as tmp_s:
        raw32 = session(build_raw_audio_model(e2e_bundle / "model.onnx", cfg, Path(tmp_s) / "fp32.onnx"))
    diffs = []
    for clip in clips:
        pcm = pcm_windows(np.concatenate(list(iter_audio_blocks(clip, cfg.sample_rate))), cfg)
        ref = default.predict_file(clip)
        ref = np.stack([ref.valence, ref.arousal], 1)
        got = raw8.run(None, {"pcm": pcm})[0]
        np.testing.assert_array_equal(raw_ort.run(None, {"pcm": pcm})[0], got)
        diffs.append(np.max(np.abs(got - ref), axis=1))
        ref32 = fp32.predict_file(clip)
        assert np.max(np.abs(raw32.run(None, {"pcm": pcm})[0] - np.stack([ref32.valence, ref32.arousal], 1))) <= 1e-5
    assert np.concatenate(diffs).max() <= E2E_TOL
