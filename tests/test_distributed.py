"""Data-parallel training under torchrun: the rank helpers, the epoch shards, 1- vs 2-process equivalence of the
teacher, one run folder from a 2-rank ``train-all``, and resuming a killed 2-rank job.

Run as a module (``python -m tests.test_distributed teacher OUT BATCH ACCUM EPOCHS``) it is the training worker
the multi-process tests launch under ``torch.distributed.run``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeemo.errors import TrainingError
from edgeemo.train import distributed
from edgeemo.train.distributed import shard_indices

REPO = Path(__file__).resolve().parents[1]
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def single(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)


def test_single_process_helpers_are_no_ops(single: None) -> None:
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.init() is False
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    obj = {"ccc_mean": 0.5}
    assert distributed.broadcast_object(obj) is obj
    distributed.barrier()
    ran = []
    with distributed.main_first():
        ran.append(1)
    assert ran == [1]
    assert distributed.local_device_name("cuda") == "cuda"


def test_bad_torchrun_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(TrainingError, match="WORLD_SIZE='two' is not an integer"):
        distributed.world_size()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(TrainingError, match="RANK 5 is outside WORLD_SIZE 2"):
        distributed.init()


@pytest.mark.parametrize("n, world, batch", [(20, 2, 4), (21, 2, 4), (7, 3, 2), (5, 1, 3)])
def test_shards_are_disjoint_equal_and_batch_by_batch_the_single_process_batches(n: int, world: int, batch: int):
    order = list(reversed(range(n)))
    shards = [shard_indices(order, world, r) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert len(shards[0]) == -(-n // world)
    flat = [i for s in shards for i in s]
    assert set(flat) == set(order)  # every item, and only a wrap-round pad repeats any
    assert len(flat) - n == (-n) % world
    if n % world == 0:
        assert len(set(flat)) == len(flat)
    # the k-th batch of every rank together is the k-th batch of batch*world of one process
    for k in range(0, n // (batch * world)):
        together = sorted(i for s in shards for i in s[k * batch : (k + 1) * batch])
        assert together == sorted(order[k * batch * world : (k + 1) * batch * world])


def test_strip_option_removes_both_spellings() -> None:
    from edgeemo.cli_train import strip_option

    args = ["train-all", "--nproc-per-node", "2", "--name", "x", "--nproc-per-node=3", "--quiet"]
    assert strip_option(args, "--nproc-per-node") == ["train-all", "--name", "x", "--quiet"]


def test_nproc_under_torchrun_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from edgeemo.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(main, ["train-all", "--nproc-per-node", "2", "--runs-dir", "/nonexistent"])
    assert res.exit_code != 0
    assert "under torchrun, torchrun sets the processes" in res.output


# ---- multi-process (gloo on CPU) ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}


def _torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def _teacher(out: Path, nproc: int, batch: int, accum: int, epochs: int = 3) -> dict:
    cmd = ["-m", "tests.test_distributed", "teacher", str(out), str(batch), str(accum), str(epochs)]
    full = _torchrun(nproc, *cmd) if nproc > 1 else [sys.executable, *cmd]
    res = subprocess.run(full, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_effective_batch(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    one = _teacher(tmp_path / "one", 1, batch=8, accum=1)
    two = _teacher(tmp_path / "two", 2, batch=2, accum=2)  # 2 x 2 x 2 = 8, with no_sync on the first micro-step
    assert [h["effective_batch"] for h in two["history"]] == [8, 8, 8]
    assert [h["effective_batch"] for h in one["history"]] == [8, 8, 8]
    # same schedule: identical optimiser steps per epoch, so identical learning rates
    assert [h["lr"] for h in two["history"]] == pytest.approx([h["lr"] for h in one["history"]], rel=1e-9)
    # The same samples in every optimiser step, gradients averaged over them: the same training up to float
    # rounding (the worker's teacher has no batch norm, dropout or augmentation, whose draws would differ).
    # AdamW at lr 1e-3 amplifies that rounding over the epochs: one process regrouping the same steps as
    # micro-batch 2 x 4 accumulation steps instead of 8 x 1 moves epoch-1 validation CCC by 0.12 here.
    # Tolerance: 2 % on the first epoch's training loss (measured 0.6 %), 0.15 on every epoch's validation CCC
    # (measured <= 0.054).
    assert two["history"][0]["train_loss"] == pytest.approx(one["history"][0]["train_loss"], rel=0.02)
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["val_ccc_mean"] == pytest.approx(a["val_ccc_mean"], abs=0.15)
    assert min(r["history"][-1]["val_ccc_mean"] for r in (one, two)) > 0.2  # they learned (the set encodes its labels)
    # one set of files, written by rank 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


@pytest.mark.slow
def test_two_ranks_train_a_stage_that_leaves_parameters_out_of_its_loss(tmp_path: Path) -> None:
    res = subprocess.run(
        _torchrun(2, "-m", "tests.test_distributed", "unused", str(tmp_path)),
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]
    assert out["unused_changed"] is False  # no gradient reached it: weight decay-free SGD left it alone
    assert [h["effective_batch"] for h in out["history"]] == [16, 16, 16]


SMALL_CLI = [
    "--corpus-n", "16", "--set", "corpus_duration=6", "--set", 'features={"n_mels": 32, "n_frames": 64, '
    '"hop_length": 500}', "--teacher-depth", "1", "--teacher-epochs", "6", "--student-epochs", "1", "--gan-epochs", "1",
    "--batch-size", "4", "--accum-steps", "2", "--windows-per-song", "2", "--gan-ratio", "0.5", "--quiet",
]  # fmt: skip


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid`` and by them (Linux /proc)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [d for c in children for d in (c, *_descendants(c))]


def _layout(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_rank_train_all_killed_mid_run_resumes_into_one_run_folder(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    cache = tmp_path / "cache"
    cli = ["-m", "edgeemo", "train-all", "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(cache), *SMALL_CLI]
    proc = subprocess.Popen(_torchrun(2, *cli, "--name", "ddp"), env=_env(), cwd=REPO, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "runs" / "ddp" / "teacher" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the job ended before it could be killed"
    for pid in [*_descendants(proc.pid), proc.pid]:  # every rank (torchrun starts each in its own session), then it
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(metrics.read_text().splitlines())
    assert killed_at < 6
    # resumed through the convenience flag, which re-launches under torch.distributed.run
    res = subprocess.run(
        [sys.executable, *cli, "--name", "ddp", "--nproc-per-node", "2"],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {metrics.parent / 'last.pt'} at epoch {killed_at + 1}/6" in res.stderr
    assert res.stdout.count("retention (student/teacher CCC)") == 1  # one table, from rank 0
    epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]
    # the same files as a single-process run of the same config
    res1 = subprocess.run(
        [sys.executable, *cli, "--name", "one"], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300
    )
    assert res1.returncode == 0, res1.stderr[-3000:]
    assert _layout(tmp_path / "runs" / "ddp") == _layout(tmp_path / "runs" / "one")
    summary = json.loads((tmp_path / "runs" / "ddp" / "summary.json").read_text())
    assert (
        summary["test"]["student"]["params"]
        == json.loads((tmp_path / "runs" / "one" / "summary.json").read_text())["test"]["student"]["params"]
    )


def _teacher_worker(out: str, batch: str, accum: str, epochs: str) -> None:
    """Train the tiny teacher on the learnable set (under torchrun: data-parallel) and write its history."""
    from edgeemo.atomic import atomic_write_json
    from tests.train_fixtures import FakeRunData, fit_teacher, learnable_windowset, tiny_config

    cfg = tiny_config(
        batch_size=int(batch),
        accum_steps=int(accum),
        teacher_epochs=int(epochs),
        train_windows_per_song=None,
        **{"teacher.stem": "patch"},  # no batch norm: its statistics are per rank on CPU
    )
    data = FakeRunData(learnable_windowset(12, seed=0), learnable_windowset(6, seed=1))
    t0 = time.perf_counter()
    result = fit_teacher(data, cfg, Path(out), progress=False)
    seconds = time.perf_counter() - t0
    if distributed.is_main():
        n = len(data.windows("train")) * int(epochs)
        atomic_write_json(
            Path(out) / "result.json",
            {"history": result.history, "seconds": seconds, "windows_per_s": n / seconds},
        )
    distributed.destroy()


class _PartlyUsedStage:
    """A linear regressor whose model also holds a layer its loss never uses (as pretraining's regression head)."""

    name = "partly-used"
    score_key = "neg_mse"

    def __init__(self) -> None:
        import torch
        from torch import nn

        torch.manual_seed(0)
        self.model = nn.ModuleDict({"used": nn.Linear(4, 2), "unused": nn.Linear(3, 3)})
        self.x = torch.randn(40, 4)
        self.y = self.x[:, :2] * 0.5 - self.x[:, 2:] * 0.25

    def loss(self, x, y):
        import torch

        loss = torch.nn.functional.mse_loss(self.model["used"](x), y)
        return loss, {"loss": loss.item()}

    def predict(self, x):
        return self.model["used"](x)

    def validate(self, val, device, batch_size):
        import torch

        with torch.no_grad():
            return {"neg_mse": -float(torch.nn.functional.mse_loss(self.predict(self.x), self.y))}

    def epoch_extras(self, val_metrics):
        return {}

    def checkpoint_meta(self):
        return {}


def _unused_worker(out: str) -> None:
    import torch
    from torch.utils.data import TensorDataset

    from edgeemo.atomic import atomic_write_json
    from edgeemo.train.loop import FitConfig, fit

    stage = _PartlyUsedStage()
    before = stage.model["unused"].weight.detach().clone()
    optimizer = torch.optim.SGD(stage.model.parameters(), lr=0.1)
    cfg = FitConfig(epochs=3, batch_size=4, accum_steps=2, device="cpu", progress=False)
    result = fit(stage, optimizer, lambda epoch: TensorDataset(stage.x, stage.y), None, Path(out), cfg)
    if distributed.is_main():
        changed = not torch.equal(before, stage.model["unused"].weight.detach())
        atomic_write_json(Path(out) / "result.json", {"history": result.history, "unused_changed": changed})
    distributed.destroy()


if __name__ == "__main__":
    if sys.argv[1] == "unused":
        _unused_worker(sys.argv[2])
    if sys.argv[1] == "teacher":
        _teacher_worker(*sys.argv[2:6])
