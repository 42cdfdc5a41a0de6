"""The Node host example (examples/node/predict.mjs, onnxruntime-node) against ``edgeemo predict``.

Needs ``node`` and ``npm ci --ignore-scripts`` in examples/node (``.ci/run`` does both); skips otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edgeemo.cli import main
from edgeemo.features import FeatureConfig
from tests.e2e_fixtures import e2e_reference_bundle, real_clips, write_wav_16k
from tests.runtime_fixtures import mood_clip

pytest.importorskip("onnx")  # the raw-audio bundle is built by the export side

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"
SCRIPT = EXAMPLE / "predict.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("no node on PATH (apt-get install nodejs npm; .ci/run installs them)")
    if not (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("onnxruntime-node missing: npm ci --ignore-scripts --prefix examples/node")
    return exe


def run_node(node: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([node, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)


def edgeemo_predict(*args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["predict", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def series(pred: dict) -> np.ndarray:
    return np.array([[w["valence"], w["arousal"]] for w in pred["windows"]])


def song(tmp_path: Path) -> Path:
    """A real 4Q clip at 16 kHz when the shared data is there, else a synthesised one (stereo, 16-bit)."""
    from edgeemo.runtime.audio import load_audio

    cfg = FeatureConfig()
    clips = real_clips(1)
    if clips:
        return write_wav_16k(tmp_path / "song.wav", load_audio(clips[0], cfg.sample_rate), cfg)
    left, right = mood_clip(11.0, cfg.sample_rate, seed=9), mood_clip(11.0, cfg.sample_rate, seed=10)
    sf.write(str(tmp_path / "song.wav"), np.stack([left, right], 1), cfg.sample_rate, subtype="PCM_16")
    return tmp_path / "song.wav"


def test_node_example_agrees_with_edgeemo_predict(node, tmp_path):
    bundle = e2e_reference_bundle()
    wav = song(tmp_path)
    for smoothing in ("0", "0.6"):
        proc = run_node(node, str(wav), "--bundle", str(bundle), "--json", "--smoothing", smoothing)
        assert proc.returncode == 0, proc.stderr
        (got,) = json.loads(proc.stdout)
        (ref,) = edgeemo_predict(str(wav), "--bundle", str(bundle), "--smoothing", smoothing)
        assert got["model"] == "model.e2e.int8.onnx" and got["summary"]["windows"] == ref["summary"]["windows"] > 5
        np.testing.assert_allclose(
            [w["time_s"] for w in got["windows"]], [w["time_s"] for w in ref["windows"]], atol=1e-4
        )
        # features.py + int8 (edgeemo predict) vs the raw-audio int8 model in onnxruntime-node
        assert np.abs(series(got) - series(ref)).max() <= 1e-3
        assert abs(got["summary"]["valence"] - ref["summary"]["valence"]) <= 1e-3
        assert abs(got["summary"]["arousal"] - ref["summary"]["arousal"]) <= 1e-3
    # same model file in Python's onnxruntime (EmotionModel model="e2e"): identical numbers
    from edgeemo.runtime import EmotionModel

    py = EmotionModel.load(bundle, model="e2e").predict_file(wav, smoothing=0.6)
    np.testing.assert_allclose(series(got), np.stack([py.valence, py.arousal], 1), atol=1e-6)
    table = run_node(node, str(wav), "--bundle", str(bundle))
    assert table.returncode == 0 and table.stdout.splitlines()[-1].split()[0] == "mean"


def test_node_example_errors_are_one_line(node, tmp_path):
    bundle = e2e_reference_bundle()
    wav44 = tmp_path / "cd.wav"
    sf.write(str(wav44), mood_clip(2.0, 44100), 44100)
    cases = {
        str(wav44): "44100 Hz, the model takes 16000 Hz: resample first",
        str(tmp_path / "missing.wav"): "cannot read",
        str(Path(__file__)): "not a RIFF/WAVE file",
    }
    for path, message in cases.items():
        proc = run_node(node, path, "--bundle", str(bundle))
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1
    short = tmp_path / "short.wav"
    write_wav_16k(short, mood_clip(1.0, 16000, seed=3), FeatureConfig())
    proc = run_node(node, str(short), "--bundle", str(bundle), "--json")
    (got,) = json.loads(proc.stdout)
    (ref,) = edgeemo_predict(str(short), "--bundle", str(bundle))
    assert got["summary"]["padded"] is ref["summary"]["padded"] is True and got["summary"]["windows"] == 1
