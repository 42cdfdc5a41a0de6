"""The edge box: the runtime commands work with only the base install (no torch, matplotlib, PyAV, tqdm...).

Each command runs in a subprocess whose ``sitecustomize`` hides every package outside the
base install from the import system (``find_spec`` answers None, ``import`` raises
ModuleNotFoundError, exactly as when it is not installed) and logs each attempt, so the test
proves both that the commands work and that they never try to import torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")  # building the test bundle

from tests.runtime_fixtures import SMALL_CFG, cached_bundle, mood_clip, write_clip

ROOT = Path(__file__).resolve().parents[1]
# everything edgeemo's extras bring (train, live, formats, plot, dev) that the base install lacks
HIDDEN = ("torch", "torchvision", "timm", "librosa", "sklearn", "scipy", "onnx", "onnxscript", "matplotlib", "tqdm")
HIDDEN += ("av", "sounddevice", "numba", "safetensors")
NEVER = {"torch", "torchvision", "timm", "librosa", "sklearn", "scipy", "onnx", "onnxscript"}

SITECUSTOMIZE = '''
import os, sys
from importlib.machinery import PathFinder

HIDDEN = set(os.environ["EDGEEMO_HIDE"].split(","))
LOG = os.environ["EDGEEMO_HIDE_LOG"]


class HideExtras:
    """A PathFinder that cannot see the hidden packages (and notes every attempt)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            with open(LOG, "a") as f:
                f.write(name + "\\n")
            return None
        return PathFinder.find_spec(name, path, target)

    def invalidate_caches(self):
        PathFinder.invalidate_caches()


sys.meta_path[:] = [HideExtras() if f is PathFinder else f for f in sys.meta_path]
'''


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    (d / "site").mkdir()
    (d / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    clip = write_clip(d / "clip.wav", mood_clip(6.0, 22050, seed=3), 22050, subtype="PCM_16")
    write_clip(d / "other.wav", mood_clip(5.0, 16000, seed=4), 16000)
    (d / "m.csv").write_text("# scale: -1 1\npath,valence,arousal\nclip.wav,0.5,0.5\nother.wav,-0.5,0.2\n")
    log = d / "imports.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(d / "site"), str(ROOT)]),
        "EDGEEMO_HIDE": ",".join(HIDDEN),
        "EDGEEMO_HIDE_LOG": str(log),
    }

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=d, timeout=timeout)

    return {"dir": d, "bundle": cached_bundle(tmp_path_factory, SMALL_CFG), "clip": clip, "log": log, "run": run}


def _attempts(log: Path) -> set[str]:
    return {line.split(".")[0] for line in log.read_text().split()} if log.exists() else set()


def test_the_hiding_works(edge):
    res = edge["run"](sys.executable, "-c", "import torch")
    assert res.returncode == 1 and "ModuleNotFoundError: No module named 'torch'" in res.stderr
    res = edge["run"](
        sys.executable, "-c", "import importlib.util as u; print(u.find_spec('av'), u.find_spec('numpy'))"
    )
    assert res.stdout.startswith("None ModuleSpec")
    edge["log"].unlink()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["bundle", "check", "{bundle}"], "features:"),
        (["predict", "clip.wav", ".", "--bundle", "{bundle}", "--format", "summary"], "clip.wav,6.000,"),
        (["live", "--from-file", "clip.wav", "--bundle", "{bundle}", "--duration", "2.5"], "summary: 2.5 s of audio"),
        (["evaluate", "{bundle}", "--data", "m.csv"], "song"),
        (["bench", "--bundle", "{bundle}", "--runs", "50"], "student onnx fp32"),
    ],
    ids=["bundle-check", "predict", "live-from-file", "evaluate", "bench"],
)
def test_runtime_commands_without_any_extra(edge, args, expect):
    args = [a.format(bundle=edge["bundle"]) for a in args]
    res = edge["run"](sys.executable, "-m", "edgeemo", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert expect in res.stdout and "Traceback" not in res.stderr
    assert not (_attempts(edge["log"]) & NEVER), _attempts(edge["log"])


def test_plot_options_and_example_name_the_plot_extra(edge):
    hint = "plotting needs matplotlib, which is not installed: pip install 'edgeemo[plot]'"
    res = edge["run"](
        sys.executable, "-m", "edgeemo", "predict", "clip.wav", "--bundle", str(edge["bundle"]), "--plot", "t.png"
    )
    assert res.returncode == 2 and res.stderr == f"error: {hint}\n" and res.stdout == ""
    res = edge["run"](
        sys.executable, "-m", "edgeemo", "evaluate", str(edge["bundle"]), "--data", "m.csv", "--confusion", "c.png"
    )
    assert (
        res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: ") and "matplotlib" in res.stderr
    )
    assert "Traceback" not in res.stderr
    example = ROOT / "examples" / "plot_trajectory.py"
    res = edge["run"](sys.executable, str(example), "clip.wav", "t.png", "--bundle", str(edge["bundle"]))
    assert res.returncode == 1 and res.stderr == f"error: {hint}\n"
    assert not (_attempts(edge["log"]) & NEVER)
