"""The live panel in a real terminal (tmux): it fits 60, 80 and 120 columns and redraws in place, never scrolling."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("onnx")  # building the test bundle

from tests.runtime_fixtures import SMALL_CFG, cached_bundle, mood_clip, write_clip

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    deep = tmp_path_factory.mktemp("live") / ("a-rather-long-folder-name-for-music-" * 3) / "sub"
    deep.mkdir(parents=True)
    return write_clip(deep / "a song with a long file name.wav", mood_clip(4.0, 16000, seed=7), 16000)


def _run_in_tmux(cmd: str, width: int, height: int = 40, timeout: float = 60.0) -> str:
    """Run ``cmd`` in a detached tmux pane of width x height; return the pane and its scrollback when it ends."""
    sock = f"edgeemo-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    script = f"{cmd}; echo __END__ $?; sleep 60"
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", str(width), "-y", str(height), "bash", "-c", script], env=env, check=True
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                [*tmux, "capture-pane", "-p", "-S", "-", "-E", "-"], capture_output=True, text=True, check=True
            ).stdout
            if "__END__" in out or time.monotonic() > deadline:
                return out
            time.sleep(0.3)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.slow
def test_live_panel_fits_and_redraws_in_place(tmp_path_factory, long_clip, width):
    bundle = cached_bundle(tmp_path_factory, SMALL_CFG)
    cmd = shlex.join(
        [
            sys.executable,
            "-m",
            "edgeemo",
            "live",
            "--from-file",
            str(long_clip),
            "--bundle",
            str(bundle),
            "--duration",
            "4",
        ]
    )
    screen = _run_in_tmux(cmd, width)
    lines = screen.rstrip("\n").splitlines()
    assert "__END__ 0" in screen, screen
    # redrawn in place: one panel on the screen and in the scrollback, however many redraws there were
    assert sum(line.startswith("edgeemo live  ") for line in lines) == 1, screen
    assert sum("Ctrl-C to stop" in line for line in lines) == 1, screen
    header = next(line for line in lines if line.startswith("edgeemo live  "))
    assert header.endswith(" @ 16000 Hz") and "…" in header and len(header) == width - 1
    assert header.startswith(f"edgeemo live  {str(long_clip)[:8]}") and header.endswith("name.wav @ 16000 Hz")
    panel = lines[: lines.index(next(line for line in lines if "Ctrl-C to stop" in line)) + 1]
    assert all(len(line) < width for line in panel), [len(line) for line in panel]
    assert any("mood: Q" in line for line in panel) and any("arousal +" in line for line in panel)
    assert any(line.startswith("summary: 4.0 s of audio") for line in lines)
