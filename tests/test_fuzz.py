"""Property tests (hypothesis): stream API arguments, card fields and manifest rows.

Whatever they are given, these entry points either work or raise a one-line
:class:`EdgeemoError` subclass, quickly: never another exception, a hang or a multi-line
message. Kept fast: few examples each, no deadline (a shared CI machine).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnx")  # building the test bundle

from edgeemo.bundle import load_card
from edgeemo.data.manifest import read_manifest
from edgeemo.errors import AudioError, BundleError, DataError, EdgeemoError
from edgeemo.features import FeatureConfig
from edgeemo.runtime.limits import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_threads
from tests.runtime_fixtures import SMALL_CFG, write_clip

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
ANY_ARG = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.lists(st.integers(), max_size=3)
)




def _one_line(exc: Exception) -> None:
    assert str(exc) and "\n" not in str(exc)


# --- stream API arguments -------------------------------------------------------------------------------
@FAST
@given(rate=ANY_ARG | st.sampled_from([2**62, 2**40, 1e9, math.inf, math.nan, 1, True]))
def test_stream_rate_is_valid_or_refused(model, rate):
    t = time.perf_counter()
    try:
        stream = model.stream(rate)
    except AudioError as exc:
        _one_line(exc)
    else:
        assert MIN_SAMPLE_RATE <= stream.sample_rate <= MAX_SAMPLE_RATE and stream.sample_rate == rate
        stream.push(np.zeros(64, np.float32))
        stream.flush()
    assert time.perf_counter() - t < 5.0


@FAST
@given(
    shape=st.lists(st.integers(0, 40), min_size=0, max_size=3),
    dtype=st.sampled_from(["float32", "float64", "int16", "int32", "int8", "uint8", "complex64", "bool", "object"]),
    fill=st.sampled_from([0.0, 0.3, -1.0, 5e3, math.nan, math.inf]),
)
def test_push_takes_audio_or_refuses(model, shape, dtype, fill):
    with np.errstate(invalid="ignore"):  # NaN/inf cast to ints on purpose
        samples = np.full(shape, fill).astype(dtype) if dtype != "object" else np.full(shape, "x", dtype=object)
    stream = model.stream(16000)
    try:
        stream.push(samples)
        stream.flush()
    except AudioError as exc:
        _one_line(exc)


@FAST
@given(value=ANY_ARG, smoothing=ANY_ARG)
def test_predict_signal_arguments(model, value, smoothing):
    try:
        model.predict_signal(np.zeros(200, np.float32), value, smoothing=smoothing)
    except EdgeemoError as exc:
        _one_line(exc)


@FAST
@given(value=ANY_ARG)
def test_predict_file_arguments(model, value):
    with pytest.raises(EdgeemoError) as exc:  # nothing here is an existing audio file
        model.predict_file(value)
    _one_line(exc.value)


@FAST
@given(value=ANY_ARG)
def test_thread_counts(value):
    try:
        n = check_threads(value)
    except EdgeemoError as exc:
        _one_line(exc)
    else:
        assert 1 <= n <= 64 and n == value and not isinstance(value, bool)


# --- card fields ---------------------------------------------------------------------------------------
FIELDS = [
    ("feature_config",),
    ("input",),
    ("output",),
    ("default_model",),
    ("files",),
    ("name",),
    ("metrics",),
    ("input", "shape"),
    ("input", "name"),
    ("output", "shape"),
    ("files", "model.onnx"),
    ("files", "model.onnx", "sha256"),
    ("files", "model.onnx", "bytes"),
] + [("feature_config", f) for f in SMALL_CFG.to_dict()]


@FAST
@given(where=st.sampled_from(FIELDS), value=JSON)
def test_any_card_field_value_loads_or_is_a_bundle_error(bundle, tmp_path_factory, where, value):
    card = json.loads((bundle / "card.json").read_text())
    edited = copy.deepcopy(card)
    node = edited
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    d = tmp_path_factory.mktemp("card")
    shutil.copytree(bundle, d / "b")
    (d / "b" / "card.json").write_text(json.dumps(edited))
    try:
        loaded = load_card(d / "b")
    except BundleError as exc:
        _one_line(exc)
    else:
        FeatureConfig.from_dict(loaded["feature_config"])  # anything accepted is usable


@FAST
@given(values=st.dictionaries(st.sampled_from(sorted(SMALL_CFG.to_dict())), JSON, max_size=4))
def test_feature_config_values(values):
    try:
        cfg = FeatureConfig.from_dict({**SMALL_CFG.to_dict(), **values})
    except EdgeemoError as exc:
        _one_line(exc)
    else:
        assert cfg.window_samples > 0 and cfg.window_hop_frames >= 0


# --- manifest rows -----------------------------------------------------------------------------------------
FIELD_TEXT = st.sampled_from(["a.wav", "b.wav", "0", "0.5", "-1", "2", "nan", "", "x", "1e400", "-5", "3"]) | st.text(
    max_size=6
)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("manifest")
    for name in ("a", "b"):
        write_clip(d / f"{name}.wav", np.sin(np.arange(16000) / 7).astype(np.float32) * 0.3, 16000)
    return d


@FAST
@given(
    header=st.lists(st.sampled_from(["path", "valence", "arousal", "start_s", "end_s", "id", "artist"]), max_size=7),
    rows=st.lists(st.lists(FIELD_TEXT, max_size=8), max_size=5),
)
def test_manifest_rows_parse_or_are_a_data_error(audio_dir, header, rows):
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    m = audio_dir / "fuzz.csv"
    m.write_text(buf.getvalue(), encoding="utf-8")
    try:
        ss = read_manifest(m)
    except DataError as exc:
        _one_line(exc)
    else:
        for s in ss.songs:
            assert -1 <= s.valence <= 1 and -1 <= s.arousal <= 1 and s.start_s >= 0
            assert s.end_s is None or s.end_s > s.start_s
        assert len({s.id for s in ss.songs}) == len(ss.songs)


@FAST
@given(raw=st.binary(max_size=200))
def test_manifest_bytes(audio_dir, raw):
    m = audio_dir / "raw.csv"
    m.write_bytes(b"path,valence,arousal\n" + raw)
    try:
        read_manifest(m)
    except DataError as exc:
        _one_line(exc)
