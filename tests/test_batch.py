"""Batch predict: folders, globs and stdin, --format summary, sidecars, progress, atomic --out, a full disk."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnx")  # building the test bundle

from edgeemo.cli import main
from edgeemo.mood import mood_name, quadrant_code
from edgeemo.runtime.batch import expand_inputs
from edgeemo.runtime.output import SUMMARY_FIELDS
from tests.runtime_fixtures import mood_clip, write_clip

ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture
def tree(tmp_path) -> Path:
    """music/{a.wav, sub/b.flac, sub/deeper/c.wav, notes.txt, .hidden.wav, bad.mp3}"""
    root = tmp_path / "music"
    (root / "sub" / "deeper").mkdir(parents=True)
    write_clip(root / "a.wav", mood_clip(5.0, 16000, seed=1), 16000)
    write_clip(root / "sub" / "b.flac", mood_clip(4.5, 22050, seed=2), 22050, subtype="PCM_16")
    write_clip(root / "sub" / "deeper" / "c.wav", mood_clip(6.0, 44100, seed=3), 44100)
    write_clip(root / ".hidden.wav", mood_clip(3.0, 16000, seed=4), 16000)
    (root / "notes.txt").write_text("not audio")
    (root / "bad.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    return root


def _cli(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def test_expand_inputs_folders_globs_and_repeats(tree):
    items, problems = expand_inputs([str(tree), str(tree / "a.wav"), str(tree / "sub" / "**" / "*.wav"), "-"])
    names = [i.name for i in items]
    assert names == [
        str(tree / "a.wav"),
        str(tree / "bad.mp3"),
        str(tree / "sub" / "b.flac"),
        str(tree / "sub" / "deeper" / "c.wav"),
        "-",
    ]  # sorted, recursive, hidden files and other extensions left out, the repeats once
    assert problems == []
    empty = tree / "empty"
    empty.mkdir()
    items, problems = expand_inputs([str(empty), str(tree / "*.ogg"), str(tree / "missing.wav")])
    assert [i.name for i in items] == [str(tree / "missing.wav")]  # a named file is tried (and reported) as is
    assert problems[0].startswith(f"{empty}: no audio files in this folder")
    assert problems[1] == f"{tree / '*.ogg'}: no file matches this pattern"


def test_summary_over_a_folder_reports_bad_files_and_exits_1(tree, bundle, model):
    res = _cli("predict", str(tree), "--bundle", str(bundle), "--format", "summary")
    assert res.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(rows[0]) == list(SUMMARY_FIELDS)
    assert [r["path"] for r in rows] == [str(tree / "a.wav"), str(tree / "sub/b.flac"), str(tree / "sub/deeper/c.wav")]
    for r in rows:
        want = model.predict_file(r["path"]).summary
        assert float(r["valence"]) == pytest.approx(want["valence"], abs=1e-6)
        assert float(r["arousal"]) == pytest.approx(want["arousal"], abs=1e-6)
        assert float(r["duration_s"]) == pytest.approx(want["duration_s"], abs=1e-3)
        assert int(r["windows"]) == want["windows"] > 0
        v, a = float(r["valence"]), float(r["arousal"])
        assert (r["quadrant"], r["mood"]) == (quadrant_code(v, a), mood_name(v, a)) == (want["quadrant"], want["mood"])
    err = res.stderr.splitlines()
    assert err[0].startswith(f"error: {tree / 'bad.mp3'}: not a decodable audio file")
    assert err[-1] == "1 of 4 input(s) failed"


def test_nothing_to_predict_prints_no_header(tmp_path, bundle):
    (tmp_path / "empty").mkdir()
    res = _cli("predict", str(tmp_path / "empty"), "--bundle", str(bundle), "--format", "csv")
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr.startswith(f"error: {tmp_path / 'empty'}: no audio files in this folder")


def test_stdin_dash_reads_audio_bytes(tree, bundle, model):
    data = (tree / "sub" / "b.flac").read_bytes()
    res = _cli("predict", "-", "--bundle", str(bundle), "--format", "summary", input=data)
    assert res.exit_code == 0, res.output
    (row,) = csv.DictReader(io.StringIO(res.stdout))
    want = model.predict_file(tree / "sub" / "b.flac").summary
    assert row["path"] == "-" and float(row["valence"]) == pytest.approx(want["valence"], abs=1e-6)
    res = _cli("predict", "-", "--bundle", str(bundle), input=b"")
    assert res.exit_code == 1 and res.stderr.startswith("error: -: no audio bytes on standard input")
    res = _cli("predict", "-", "--bundle", str(bundle), input=b"\x00garbage" * 100)
    assert res.exit_code == 1 and res.stderr.startswith("error: -: not a decodable audio file")
    assert "edgeemo-stdin" not in res.stderr  # the temporary file's name never shows


def test_sidecars_next_to_files_and_under_out_dir(tree, bundle, model, tmp_path):
    res = _cli("predict", str(tree / "sub"), "--bundle", str(bundle), "--sidecar", "--format", "summary")
    assert res.exit_code == 0, res.output
    side = tree / "sub" / "b.flac.edgeemo.json"
    data = json.loads(side.read_text())
    want = model.predict_file(tree / "sub" / "b.flac")
    assert data["summary"]["valence"] == pytest.approx(want.summary["valence"], abs=1e-9)
    assert len(data["windows"]) == len(want) and data["windows"][0]["mood"] == want.moods()[0]
    out = tmp_path / "sidecars"
    res = _cli("predict", str(tree), "--bundle", str(bundle), "--sidecar", "--out-dir", str(out), "--format", "summary")
    assert res.exit_code == 1  # bad.mp3
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert got == ["a.wav.edgeemo.json", "sub/b.flac.edgeemo.json", "sub/deeper/c.wav.edgeemo.json"]
    res = _cli("predict", "-", "--bundle", str(bundle), "--sidecar", input=b"x")
    assert res.exit_code == 2 and "needs --out-dir" in res.stderr
    res = _cli("predict", str(tree / "a.wav"), "--bundle", str(bundle), "--out-dir", str(out))
    assert res.exit_code == 2 and "use it with --sidecar" in res.stderr


def test_progress_bar_on_stderr(tree, bundle):
    args = ("predict", str(tree), "--bundle", str(bundle), "--format", "summary")
    quiet = _cli(*args)
    assert "\r" not in quiet.stderr  # not a terminal: no bar by default
    shown = _cli(*args, "--progress")
    assert "\r[" in shown.stderr and "/4 files" in shown.stderr and shown.stdout == quiet.stdout
    # the error line is printed on a cleared line, not glued to the bar
    assert f"\r\x1b[Kerror: {tree / 'bad.mp3'}: not a decodable" in shown.stderr
    assert shown.stderr.endswith("\r\x1b[K1 of 4 input(s) failed\n")


def test_out_is_atomic_and_kept_when_nothing_was_produced(tree, bundle, tmp_path):
    out = tmp_path / "prev.json"
    out.write_text('["previous"]')
    res = _cli("predict", str(tree / "missing.wav"), "--bundle", str(bundle), "--format", "json", "--out", str(out))
    assert res.exit_code == 1 and out.read_text() == '["previous"]' and "nothing written" in res.stderr
    res = _cli("predict", str(tree / "a.wav"), "--bundle", str(bundle), "--format", "json", "--out", str(out))
    assert res.exit_code == 0 and json.loads(out.read_text())[0]["path"] == str(tree / "a.wav")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prev")] == []  # no temp file left
    res = _cli("predict", str(tree / "a.wav"), "--bundle", str(bundle), "--out", str(tmp_path))
    assert res.exit_code == 2 and "is a folder" in res.stderr


def _run(cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)


def test_ulimit_f_leaves_the_previous_output_whole(tree, bundle, tmp_path):
    out = tmp_path / "prev.json"
    out.write_text('["previous"]')
    files = " ".join(str(tree / n) for n in ("a.wav", "sub/b.flac", "sub/deeper/c.wav"))
    res = _run(
        f"ulimit -f 4; {sys.executable} -m edgeemo predict {files} --bundle {bundle} --format json --out {out}"
    )  # 4 blocks of 512 bytes: the JSON is larger
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {out} (File too large)")
    assert "Traceback" not in res.stderr and out.read_text() == '["previous"]'
    assert sorted(p.name for p in tmp_path.iterdir() if "prev" in p.name) == ["prev.json"]  # no temp file left


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["table", "summary", "json"])
def test_stdout_to_dev_full_is_one_line(tree, bundle, fmt):
    res = _run(f"{sys.executable} -m edgeemo predict {tree / 'a.wav'} --bundle {bundle} --format {fmt} > /dev/full")
    assert res.returncode == 2
    assert res.stderr == "error: cannot write the output (No space left on device)\n"


def test_closed_pipe_is_quiet(tree, bundle):
    res = _run(
        f"{sys.executable} -m edgeemo predict {tree} --bundle {bundle} --format csv 2>err.txt | head -c 10 >/dev/null;"
        " cat err.txt; rm -f err.txt"
    )
    assert "Traceback" not in res.stdout and "BrokenPipe" not in res.stdout


def test_thread_count_is_bounded(tree, bundle):
    res = _cli("predict", str(tree / "a.wav"), "--bundle", str(bundle), "--threads", "1000")
    assert res.exit_code == 2 and res.stderr == "error: threads 1000 is outside 1..64\n" and res.stdout == ""
