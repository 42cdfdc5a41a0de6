"""Issue 21 cases for the runtime API, bundles, cards, manifests, ``data check`` and ``evaluate``.

Each bad input must give a one-line :class:`EdgeemoError` (or the CLI's ``error:`` line and a
non-zero exit) quickly, never a hang, a traceback or a silently wrong result.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnx")  # building test bundles

from edgeemo.bundle import OUTPUT_TOLERANCE, load_card, open_session, verify_bundle, write_bundle
from edgeemo.cli import main
from edgeemo.data.check import check_dataset
from edgeemo.data.manifest import read_manifest
from edgeemo.errors import AudioError, BundleError, DataError, EdgeemoError
from edgeemo.runtime import EmotionModel
from tests.runtime_fixtures import SMALL_CFG, mood_clip, sample_card, write_clip

BAD_RATES = [2**62, 1, True, False, 1e9, 2**40, math.inf, -math.inf, math.nan, 0, -16000, 999, 16000.5, "16000", None]




def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


# --- sample rates, threads, argument types ---------------------------------------------------------
@pytest.mark.parametrize("rate", BAD_RATES, ids=repr)
def test_stream_and_signal_refuse_bad_rates_at_once(model, rate):
    t = time.perf_counter()
    with pytest.raises(AudioError, match="sample rate") as exc:
        model.stream(rate)
    one_line(exc)
    with pytest.raises(AudioError, match="sample rate"):
        model.predict_signal(np.zeros(100, np.float32), rate)
    assert time.perf_counter() - t < 1.0  # refused before any resampler exists


@pytest.mark.parametrize("rate", [1000, 16000, 16000.0, np.int64(44100), 1_000_000])
def test_stream_accepts_rates_in_range(model, rate):
    stream = model.stream(rate)
    assert stream.sample_rate == int(rate) and isinstance(stream.sample_rate, int)
    assert len(stream.push(np.zeros(10, np.float32))) == 0


@pytest.mark.parametrize("threads", [0, -1, 65, 1000, 5000, True, 2.5, "4", None])
def test_load_refuses_bad_thread_counts(bundle, threads):
    t = time.perf_counter()
    with pytest.raises(EdgeemoError, match="threads") as exc:
        EmotionModel.load(bundle, threads=threads)
    one_line(exc)
    assert time.perf_counter() - t < 1.0


def test_load_accepts_thread_counts_in_range(bundle):
    assert EmotionModel.load(bundle, threads=2).threads == 2


@pytest.mark.parametrize("bad", [None, 123, 1.5, b"song.wav", ["a.wav"]], ids=repr)
def test_predict_file_refuses_non_paths(model, bad):
    with pytest.raises(EdgeemoError, match=r"must be a str or os\.PathLike") as exc:
        model.predict_file(bad)
    one_line(exc)


def test_predict_file_refuses_file_objects_with_a_hint(model, tmp_path):
    path = write_clip(tmp_path / "a.wav", mood_clip(3.0, 16000), 16000)
    with path.open("rb") as f, pytest.raises(EdgeemoError, match="predict_signal") as exc:
        model.predict_file(f)
    one_line(exc)
    with pytest.raises(EdgeemoError, match="file object"):
        model.predict_file(io.BytesIO(path.read_bytes()))


def test_predict_file_takes_str_path_and_pathlike(model, tmp_path):
    path = write_clip(tmp_path / "a.wav", mood_clip(3.0, 16000), 16000)

    class Located:
        def __fspath__(self) -> str:
            return str(path)

    a, b, c = model.predict_file(path), model.predict_file(str(path)), model.predict_file(Located())
    assert np.array_equal(a.valence, b.valence) and np.array_equal(a.arousal, c.arousal)


def test_load_refuses_a_non_path_bundle(bundle):
    with pytest.raises(EdgeemoError, match="bundle path must be"):
        EmotionModel.load(123)


def test_forged_header_rates_are_refused_in_predict_file(model, tmp_path):
    import soundfile as sf

    low = tmp_path / "one_hz.wav"
    sf.write(str(low), np.linspace(-0.5, 0.5, 600, dtype=np.float32), 1000)
    raw = bytearray(low.read_bytes())
    raw[24:28] = (1).to_bytes(4, "little")  # the WAV fmt chunk's sample rate -> 1 Hz
    low.write_bytes(bytes(raw))
    t = time.perf_counter()
    with pytest.raises(EdgeemoError, match=r"sample rate (in the file header )?1 Hz is outside") as exc:
        model.predict_file(low)
    assert str(low) in one_line(exc) and time.perf_counter() - t < 2.0
    raw[24:28] = (2_000_000_000).to_bytes(4, "little")
    low.write_bytes(bytes(raw))
    with pytest.raises(EdgeemoError, match="outside"):
        model.predict_file(low)


# --- silence, DC and one-sample inputs ----------------------------------------------------------------
def test_dc_only_is_silent_and_a_dc_offset_is_not(model, tmp_path):
    sr = 16000
    dc = write_clip(tmp_path / "dc.wav", np.full(3 * sr, 0.5, np.float32), sr)
    with pytest.raises(AudioError, match="silent"):
        model.predict_file(dc)
    music = mood_clip(3.0, sr, seed=5) * 0.5
    offset = write_clip(tmp_path / "offset.wav", music + 0.3, sr)
    assert len(model.predict_file(offset)) > 0
    stream = model.stream(44100)
    stream.push(np.full(44100, -0.25, np.float32))
    assert stream.silent and stream.swing == 0.0
    stream.push(np.array([0.0], np.float32))
    assert not stream.silent


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 96000])
def test_one_sample_gives_one_padded_window_at_every_rate(model, rate, tmp_path):
    sig = model.predict_signal(np.array([0.3], np.float32), rate)
    stream = model.stream(rate)
    chunk = stream.push(np.array([0.3], np.float32))
    last = stream.flush()
    assert len(chunk) == 0 and len(last) == 1 and last.padded and stream.padded
    assert len(sig) == 1 and sig.padded
    assert np.array_equal(sig.valence, last.valence) and np.array_equal(sig.arousal, last.arousal)
    # a one-sample file is silent (no swing) at every rate: refused, like any silent file
    path = write_clip(tmp_path / f"one_{rate}.wav", np.array([0.3], np.float32), rate)
    with pytest.raises(AudioError, match="silent"):
        model.predict_file(path)
    assert len(model.stream(rate).flush()) == 0  # an empty stream still gives nothing


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_short_inputs_pad_the_same_in_file_signal_and_stream(model, rate, tmp_path):
    x = mood_clip(0.7, rate, seed=rate)
    path = write_clip(tmp_path / "short.wav", x, rate)
    f = model.predict_file(path)
    s = model.predict_signal(x, rate)
    stream = model.stream(rate)
    parts = [stream.push(x[i : i + 333]) for i in range(0, len(x), 333)] + [stream.flush()]
    st_v = np.concatenate([p.valence for p in parts])
    assert len(f) == len(s) == len(st_v) == 1 and f.padded and s.padded
    assert np.array_equal(f.valence, s.valence) and np.allclose(st_v, s.valence, atol=1e-6)


def test_predict_file_equals_a_stream_at_the_files_rate(model, tmp_path):
    x = mood_clip(6.0, 44100, seed=9)
    path = write_clip(tmp_path / "a44.wav", x, 44100)
    f = model.predict_file(path)
    stream = model.stream(44100)
    parts = [stream.push(x[i : i + 4096]) for i in range(0, len(x), 4096)] + [stream.flush()]
    v = np.concatenate([p.valence for p in parts if len(p)])
    assert np.allclose(f.valence, v, atol=1e-6) and f.summary["duration_s"] == pytest.approx(6.0)


# --- cards ------------------------------------------------------------------------------------------
def _card_copy(bundle: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    card = json.loads((copy / "card.json").read_text())
    edit(card)
    (copy / "card.json").write_text(json.dumps(card))
    return copy


CARD_EDITS = {
    "hop_nan": (lambda c: c["feature_config"].update(window_hop_s=math.nan), "window_hop_s must be finite"),
    "hop_inf": (lambda c: c["feature_config"].update(window_hop_s=math.inf), "window_hop_s must be finite"),
    "n_fft_text": (lambda c: c["feature_config"].update(n_fft="1024"), "n_fft must be a number"),
    "n_mels_bool": (lambda c: c["feature_config"].update(n_mels=True), "n_mels must be a number"),
    "n_fft_huge": (lambda c: c["feature_config"].update(n_fft=10**12), "n_fft 1000000000000 is above"),
    "rate_huge": (lambda c: c["feature_config"].update(sample_rate=10**400), "sample_rate .* too large"),
    "fc_list": (lambda c: c.update(feature_config=[1, 2]), "feature_config must be an object"),
    "fc_unknown": (lambda c: c["feature_config"].update(bogus=1), "no field"),
    "shape_int": (lambda c: c["input"].update(shape=5), "input shape 5 does not match"),
    "shape_short": (lambda c: c["input"].update(shape=[None, 1, 32]), "input shape"),
    "shape_wrong": (lambda c: c["input"].update(shape=[None, 1, 64, 64]), "input shape"),
    "out_shape": (lambda c: c["output"].update(shape=[None, 3]), "output shape"),
    "input_text": (lambda c: c.update(input="mel"), "input must be an object"),
    "dtype": (lambda c: c["input"].update(dtype="float16"), "dtype"),
    "labels": (lambda c: c["output"].update(labels="valence"), "labels"),
    "range": (lambda c: c["output"].update(range=[0, 9]), "range"),
    "default": (lambda c: c.update(default_model=5), "default_model"),
    "name": (lambda c: c.update(name=123), "name must be text"),
    "metrics": (lambda c: c.update(metrics=[1]), "metrics must be an object"),
    "sha": (lambda c: c["files"]["model.onnx"].update(sha256="xyz"), "bad files entry"),
    "bytes": (lambda c: c["files"]["model.onnx"].update(bytes="big"), "bad files entry"),
    "files": (lambda c: c.update(files=[]), "lists no files"),
    "schema": (lambda c: c.update(schema_version="1"), "schema_version"),
}


@pytest.mark.parametrize("case", sorted(CARD_EDITS))
def test_bad_card_fields_are_one_line_bundle_errors(bundle, tmp_path, case):
    edit, message = CARD_EDITS[case]
    copy = _card_copy(bundle, tmp_path, edit)
    for call in (load_card, verify_bundle, EmotionModel.load):
        with pytest.raises(BundleError, match=message) as exc:
            call(copy)
        one_line(exc)
    res = CliRunner().invoke(main, ["bundle", "check", str(copy)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1
    assert "Traceback" not in res.output


def test_unreadable_cards(bundle, tmp_path):
    copy = _card_copy(bundle, tmp_path, lambda c: None)
    for raw in (b"\xff\xfe{\x00}\x00", b"[" * 100_000, b"{" + b" " * 1_100_000 + b"}"):
        (copy / "card.json").write_bytes(raw)
        with pytest.raises(BundleError) as exc:
            load_card(copy)
        one_line(exc)


def test_free_form_card_sections_do_not_break_the_summary(bundle, tmp_path):
    from edgeemo.bundle import card_summary

    def edit(c):
        c["training_data"] = {"pretraining": {"hours": [1, 2], "teacher_signal": "x", "unlabeled_folders": [1]}}
        c["metrics"] = {"quadrants": {"m": {"acc": "high"}}}

    # descriptive sections are embedded in the models too, so write a real bundle with them
    card = sample_card(SMALL_CFG)
    edit(card)
    out = write_bundle(tmp_path / "free", {"model.onnx": bundle / "model.onnx"}, card)
    text = card_summary(verify_bundle(out))
    assert "0.00 h of unlabeled audio" in text and "acc high" in text


# --- model outputs: the probe and the runtime clip ------------------------------------------------------
def _head_model(
    path: Path, *, scale: float, out_dim: int = 2, clip: tuple[float, float] | None = None, nan=False, tanh=True
):
    """mel -> mean over time -> Gemm (out_dim) [-> tanh] x ``scale`` [-> Clip] [-> NaN]: chosen outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = SMALL_CFG
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((out_dim, cfg.n_mels)) / cfg.n_mels).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["mel"], ["m"], axes=[3], keepdims=0),
        helper.make_node("Flatten", ["m"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W", "b"], ["g"], transB=1),
        helper.make_node("Tanh" if tanh else "Identity", ["g"], ["t"]),
        helper.make_node("Mul", ["t", "s"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.zeros(out_dim, np.float32), "b"),
        numpy_helper.from_array(np.array(scale, np.float32), "s"),
    ]
    last = "y"
    if clip is not None:
        nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["c"]))
        inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in zip(("lo", "hi"), clip, strict=True)]
        last = "c"
    if nan:
        nodes.append(helper.make_node("Sqrt", [last], ["n"]))  # sqrt of negative outputs -> NaN
        last = "n"
    nodes.append(helper.make_node("Identity", [last], ["valence_arousal"]))
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", 1, cfg.n_mels, cfg.n_frames])],
        [helper.make_tensor_value_info("valence_arousal", TensorProto.FLOAT, ["batch", out_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _bundle_of(tmp_path: Path, name: str, **head) -> Path:
    fp32 = _head_model(tmp_path / f"{name}.onnx", **head)
    return write_bundle(tmp_path / name, {"model.onnx": fp32}, sample_card(SMALL_CFG, name=name))


@pytest.mark.parametrize(
    "head,message",
    [
        (dict(scale=9.3), "outside the documented range"),
        (dict(scale=0.5, out_dim=1), "shape"),
        (dict(scale=0.5, out_dim=3), "shape"),
        (dict(scale=0.5, nan=True), "NaN"),
    ],
    ids=["9.3", "Nx1", "Nx3", "nan"],
)
def test_probe_rejects_bad_outputs(tmp_path, head, message):
    b = _bundle_of(tmp_path, "bad", **head)
    for call in (verify_bundle, EmotionModel.load):
        with pytest.raises(BundleError, match=message) as exc:
            call(b)
        one_line(exc)
    res = CliRunner().invoke(main, ["bundle", "check", str(b)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1


def test_runtime_clips_small_overshoot_to_the_range(tmp_path):
    over = 1.0 + OUTPUT_TOLERANCE / 2
    b = _bundle_of(tmp_path, "over", scale=100.0, clip=(-over, over))  # saturates at +-over on real audio
    model = EmotionModel.load(b)
    raw = open_session(b / "model.onnx").run(None, {"mel": _windows(model)})[0]
    assert np.abs(raw).max() == pytest.approx(over, abs=1e-6)  # the model itself overshoots
    pred = model.predict_signal(mood_clip(6.0, 16000, seed=3), 16000)
    values = np.concatenate([pred.valence, pred.arousal])
    assert values.min() >= -1.0 and values.max() <= 1.0 and np.isclose(np.abs(values).max(), 1.0)


def _windows(model: EmotionModel) -> np.ndarray:
    from edgeemo.features import frame_windows, log_mel

    cfg = model.feature_config
    return frame_windows(log_mel(mood_clip(6.0, 16000, seed=3), cfg), cfg)[:, None].astype(np.float32).copy()


def test_overshoot_beyond_the_tolerance_fails_at_runtime(tmp_path):
    # in range on the probe windows, far out on loud real windows: predict_windows refuses, never clips it away
    b = _bundle_of(tmp_path, "far", scale=0.1, tanh=False)
    model = EmotionModel.load(b)  # passes the probe
    loud = np.full((1, 1, SMALL_CFG.n_mels, SMALL_CFG.n_frames), 1e4, np.float32)
    out = open_session(b / "model.onnx").run(None, {"mel": loud})[0]
    assert np.abs(out).max() > 10  # the raw model leaves the range on this window
    with pytest.raises(BundleError, match="outside the documented range"):
        model.predict_windows(loud)


# --- manifests and data check ----------------------------------------------------------------------
@pytest.fixture
def audio(tmp_path) -> Path:
    write_clip(tmp_path / "a.wav", mood_clip(8.0, 16000, seed=1), 16000)
    write_clip(tmp_path / "b.wav", mood_clip(8.0, 16000, seed=2), 16000)
    return tmp_path


MANIFESTS = {
    "utf16": ("path,valence,arousal\na.wav,0,0\n".encode("utf-16"), "UTF-16"),
    "utf16be": (b"\xfe\xff" + "path,valence,arousal\n".encode("utf-16-be"), "UTF-16"),
    "binary": (bytes(range(256)) * 4, "binary"),
    "latin1": ("path,valence,arousal\nä.wav,0,0\n".encode("latin-1"), "not UTF-8 .*0xe4"),
    "short": (b"path,valence,arousal\na.wav,0\n", "line 2: 2 field"),
    "long": (b"path,valence,arousal\na.wav,0,0,7\n", "line 2: 4 field"),
    "negative_start": (b"path,valence,arousal,start_s\na.wav,0,0,-5\n", "start_s -5 is negative"),
    "conflict": (b"path,valence,arousal\na.wav,0.5,0\na.wav,-0.5,0\n", "id 'a' repeats line 2"),
    "id_twice": (b"path,valence,arousal,id\na.wav,0,0,x\nb.wav,0,0,x\n", "id 'x' repeats line 2"),
    "same_audio": (b"path,valence,arousal,id\na.wav,0.5,0,x\na.wav,0,0,y\n", "conflicting labels"),
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_bad_manifests_are_refused_in_one_line(audio, case):
    raw, message = MANIFESTS[case]
    m = audio / "m.csv"
    m.write_bytes(raw)
    with pytest.raises(DataError, match=message) as exc:
        read_manifest(m)
    one_line(exc)
    res = CliRunner().invoke(main, ["data", "check", str(m)])
    assert res.exit_code == 2 and "error: " in res.output and "Traceback" not in res.output


def test_optional_trailing_fields_may_be_left_off(audio):
    m = audio / "m.csv"
    m.write_text("path,valence,arousal,start_s,end_s\na.wav,0.5,0\nb.wav,0,0,1,3\n")
    songs = read_manifest(m).songs
    assert [(s.start_s, s.end_s) for s in songs] == [(0.0, None), (1.0, 3.0)]


def test_exact_duplicate_rows_are_left_out_with_a_warning(audio):
    m = audio / "m.csv"
    m.write_text("path,valence,arousal\na.wav,0.5,0\nb.wav,0,0\na.wav,0.5,0\n")
    ss = read_manifest(m)
    assert [s.id for s in ss.songs] == ["a", "b"]
    assert ss.skipped == ["a: line 4 duplicates line 2 (left out)"]
    report = check_dataset(m)
    assert report.ok and report.n_skipped == 1 and "duplicates line 2" in report.text()


@pytest.mark.parametrize(
    "row,problem",
    [
        ("a.wav,0,0,100,", "start_s 100 is past the end of the audio (8.000 s)"),
        ("a.wav,0,0,8,", "start_s 8 is past the end of the audio (8.000 s)"),
        ("a.wav,0,0,2,20", "end_s 20 is past the end of the audio (8.000 s)"),
    ],
)
def test_data_check_reports_excerpts_outside_the_audio(audio, row, problem):
    m = audio / "m.csv"
    m.write_text(f"path,valence,arousal,start_s,end_s\n{row}\nb.wav,0,0,,\n")
    report = check_dataset(m)
    assert not report.ok and report.excerpts == [f"a: {problem}"]
    assert report.duration_max_s == pytest.approx(8.0, abs=1e-3)  # only b's duration counts
    res = CliRunner().invoke(main, ["data", "check", str(m)])
    assert res.exit_code == 1 and "excerpt(s) outside their audio" in res.output


def test_data_check_accepts_excerpts_inside_and_a_rounding_overshoot(audio):
    m = audio / "m.csv"
    m.write_text("path,valence,arousal,start_s,end_s\na.wav,0,0,2,8.3\nb.wav,0,0,7.9,\n")
    report = check_dataset(m)
    assert report.ok and report.excerpts == []
    assert report.duration_min_s == pytest.approx(0.1, abs=1e-3) and report.duration_max_s == pytest.approx(6.0)


# --- evaluate with undecodable songs --------------------------------------------------------------------
def test_evaluate_fails_when_songs_cannot_be_decoded_unless_skipped(bundle, audio, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEMO_CACHE", str(tmp_path / "cache"))
    for k in range(3):
        write_clip(audio / f"g{k}.wav", mood_clip(5.0, 16000, seed=10 + k), 16000)
    (audio / "bad1.wav").write_bytes(b"RIFF" + bytes(100))
    (audio / "bad2.mp3").write_bytes(b"ID3" + bytes(range(256)))
    rows = "".join(f"g{k}.wav,{0.3 * k - 0.3},{0.2 - 0.2 * k}\n" for k in range(3))
    m = audio / "m.csv"
    m.write_text("path,valence,arousal\n" + rows + "bad1.wav,0,0\nbad2.mp3,0.1,0.1\nmissing.wav,0,0\n")
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", str(bundle), "--data", str(m)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "3 of 6 songs could not be used (1 missing, 2 undecodable" in res.output and "--skip-bad" in res.output
    out = tmp_path / "r.json"
    res = runner.invoke(main, ["evaluate", str(bundle), "--data", str(m), "--skip-bad", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "3 songs skipped: 1 missing, 2 undecodable" in res.output
    assert len(json.loads(out.read_text())["skipped"]) == 3
    m.write_text("path,valence,arousal\nbad1.wav,0,0\n")
    res = runner.invoke(main, ["evaluate", str(bundle), "--data", str(m), "--skip-bad"])
    assert res.exit_code == 2 and "no usable songs" in res.output


def test_evaluate_refuses_bad_cards_and_manifests_in_one_line(bundle, audio, tmp_path):
    m = audio / "m.csv"
    m.write_text("path,valence,arousal\na.wav,0,0\n")
    nan_card = _card_copy(bundle, tmp_path, CARD_EDITS["hop_nan"][0])
    res = CliRunner().invoke(main, ["evaluate", str(nan_card), "--data", str(m)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "window_hop_s must be finite" in res.output
    m.write_bytes("path,valence,arousal\na.wav,0,0\n".encode("utf-16"))
    res = CliRunner().invoke(main, ["evaluate", str(bundle), "--data", str(m)])
    assert res.exit_code == 2 and res.output == f"error: {m}: the manifest is UTF-16 text; save it as UTF-8 CSV\n"
