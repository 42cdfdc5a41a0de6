"""`edgeemo train-all` end to end on a miniature config: stages, summary, skip, SIGINT/SIGKILL resume, config guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

pytestmark = pytest.mark.slow  # trains real (miniature) models end to end through the CLI

FEATURES = json.dumps({"n_mels": 32, "n_frames": 64, "hop_length": 500})
ARGS = [
    "--corpus-n", "24", "--set", "corpus_duration=6", "--set", f"features={FEATURES}",
    "--teacher-depth", "1", "--teacher-epochs", "12", "--student-epochs", "2", "--gan-epochs", "1",
    "--batch-size", "8", "--accum-steps", "1", "--windows-per-song", "2", "--gan-ratio", "0.5", "--quiet",
]  # fmt: skip


def _cli(run_root: Path, cache: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "edgeemo", "train-all", "--runs-dir", str(run_root), *ARGS]
    return [*base, "--cache-dir", str(cache), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)


def _epochs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait_for_epoch(run: Path, epoch: int, proc: subprocess.Popen, limit: float = 240) -> None:
    metrics = run / "teacher" / "metrics.jsonl"
    t0 = time.time()
    while time.time() - t0 < limit:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= epoch:
            return
        if proc.poll() is not None:
            raise AssertionError(f"train-all exited early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    raise AssertionError("teacher never reached the epoch")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    res = _run(_cli(root, cache, "--name", "a"))
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "a", cache, res


def test_train_all_writes_every_artifact(straight):
    run, _, res = straight
    for rel in (
        "config.json", "split.json", "summary.json", "summary.png",
        "gan/gen.pt", "gan/metrics.jsonl", "gan/curves.png", "gan/samples.png", "gan/health.json",
        "teacher/best.pt", "teacher/last.pt", "teacher/metrics.jsonl", "teacher/curves.png",
        "student/best.pt", "student/last.pt", "student/metrics.jsonl", "student/curves.png",
    ):  # fmt: skip
        assert (run / rel).is_file(), rel
    summary = json.loads((run / "summary.json").read_text())
    test = summary["test"]
    if test["teacher"]["ccc_mean"] > 0:
        assert test["retention"] == pytest.approx(test["student"]["ccc_mean"] / test["teacher"]["ccc_mean"])
    else:  # undefined against a teacher no better than chance: reported as null, not a crash
        assert test["retention"] is None
    assert test["param_ratio"] == pytest.approx(test["teacher"]["params"] / test["student"]["params"])
    assert "retention" in res.stdout and "CCC_V" in res.stdout
    assert set(summary["seconds"]) >= {"features", "gan", "teacher", "student"}
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    conditions = json.loads((run / "teacher" / "done.json").read_text())["gan_conditions"]  # scored by the teacher
    assert [c["condition"] for c in conditions] == [[0.7, 0.7], [-0.7, 0.7], [-0.7, -0.7], [0.7, -0.7], [0.0, 0.0]]
    assert all(0.0 <= c["in_quadrant"] <= 1.0 for c in conditions[:4]) and "in_quadrant" not in conditions[4]
    assert all(-1.0 <= x <= 1.0 for c in conditions for x in c["mean_score"])
    assert "[teacher] GAN windows: generated for v+0.7 a+0.7" in res.stderr


def test_second_run_skips_finished_stages(straight):
    run, cache, _ = straight
    before = (run / "teacher" / "best.pt").read_bytes()
    res = _run(_cli(run.parent, cache, "--name", "a"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "done earlier" in res.stderr
    assert (run / "teacher" / "best.pt").read_bytes() == before


def test_changed_config_is_refused_without_restart(straight):
    run, cache, _ = straight
    res = _run([*_cli(run.parent, cache, "--name", "a"), "--student-epochs", "3"])
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: run")
    assert "--restart" in res.stderr


def test_sigint_and_sigkill_mid_teacher_then_resume_gives_the_same_result(straight):
    ref, cache, _ = straight
    root = ref.parent
    run = root / "b"
    for sig, epoch in ((signal.SIGINT, 2), (signal.SIGKILL, 5)):
        proc = subprocess.Popen(
            _cli(root, cache, "--name", "b"),
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            # a shell that starts the suite in the background ignores SIGINT, and children inherit that:
            # give the job the default Ctrl-C disposition a user's terminal gives it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        _wait_for_epoch(run, epoch, proc)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        if sig == signal.SIGINT:
            err = proc.stderr.read()
            assert proc.returncode == 130, err[-2000:]
            assert "Traceback" not in err
        torch.load(run / "teacher" / "last.pt", weights_only=False)  # never a torn checkpoint
    res = _run(_cli(root, cache, "--name", "b"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming" in res.stderr
    a = torch.load(ref / "teacher" / "last.pt", weights_only=False)
    b = torch.load(run / "teacher" / "last.pt", weights_only=False)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-5, atol=1e-6)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    ra, rb = strip(_epochs(ref / "teacher" / "metrics.jsonl")), strip(_epochs(run / "teacher" / "metrics.jsonl"))
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        assert y == pytest.approx(x, abs=1e-5)
    sa = json.loads((ref / "summary.json").read_text())["test"]
    sb = json.loads((run / "summary.json").read_text())["test"]
    assert sb["teacher"]["ccc_mean"] == pytest.approx(sa["teacher"]["ccc_mean"], abs=1e-5)
    assert sb["student"]["ccc_mean"] == pytest.approx(sa["student"]["ccc_mean"], abs=1e-5)
    assert not list(run.rglob("*.tmp"))


def test_evaluate_command_on_a_checkpoint(straight):
    run, cache, _ = straight
    res = subprocess.run(
        [sys.executable, "-m", "edgeemo", "evaluate", str(run / "student" / "best.pt")],
        capture_output=True, text=True, env={**_env(), "EDGEEMO_CACHE": str(cache)}, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())["test"]["student"]
    assert f"{summary['ccc_valence']:.3f}" in res.stdout
