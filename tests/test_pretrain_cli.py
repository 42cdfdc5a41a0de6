"""`edgeemo train-all --unlabeled DIR` end to end: pretrain stage, hand-over to the teacher, summary, errors.

The musicnn weights are a randomly initialised :class:`Musicnn` saved in the format
``edgeemo pretrained import-musicnn`` writes, so the test needs neither the musicnn
package nor network access.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("safetensors")

from tests.test_pipeline import ARGS, _env  # noqa: E402
from tests.test_pretrain import tone_file  # noqa: E402

pytestmark = pytest.mark.slow


def _musicnn_file(path: Path) -> Path:
    from safetensors.torch import save_file

    from edgeemo.pretrained.musicnn import FORMAT, Musicnn

    torch.manual_seed(0)
    net = Musicnn(num_classes=50)
    meta = {"format": FORMAT, "model": "MSD_musicnn", "tags": json.dumps([f"tag{i}" for i in range(50)])}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    return path


def _train_all(root: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [a for a in ARGS]
    cmd = [sys.executable, "-m", "edgeemo", "train-all", "--runs-dir", str(root), *args, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)


def test_train_all_pretrains_then_fine_tunes_from_the_pretrained_backbone(tmp_path):
    audio = tmp_path / "unlabeled"
    for i in range(4):
        tone_file(audio / f"track{i}.wav", 21.0, 300 + 250 * i, 0.1 + 0.05 * i, seed=i)
    weights = _musicnn_file(tmp_path / "musicnn.safetensors")
    common = [
        "--cache-dir", str(tmp_path / "cache"), "--name", "p", "--unlabeled", str(audio),
        "--musicnn-weights", str(weights), "--pretrain-epochs", "2", "--teacher-depth", "2",
        "--trainable-blocks", "1", "--teacher-epochs", "2", "--student-epochs", "1", "--gan-epochs", "0",
        "--gan-ratio", "0", "--corpus-n", "12", "--student-pretrain",
    ]  # fmt: skip
    res = _train_all(tmp_path / "runs", *common)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "p"
    done = json.loads((run / "pretrain" / "done.json").read_text())
    assert done["files"] == {"train": 3, "held_out": 1}
    assert done["windows"]["train"] > 0 and set(done["val"]) >= {"emb_r2", "emb_cos", "tag_bce"}
    assert done["teacher_signal"]["name"] == "MSD_musicnn"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pretrain"]["best_epoch"] == done["best_epoch"]
    assert "pretrain" in summary["seconds"]

    # the teacher started from the pretrained backbone: its frozen first block is exactly the pretrained one
    backbone = torch.load(run / "pretrain" / "backbone.pt", weights_only=False)
    teacher = torch.load(run / "teacher" / "best.pt", weights_only=False)
    assert teacher["started_from"] == str(run / "pretrain" / "backbone.pt")
    for k in ("blocks.0.attn.qkv.weight", "patch_embed.proj.net.0.weight", "pos_embed"):  # tiny: conv stem
        torch.testing.assert_close(teacher["state_dict"][f"backbone.{k}"], backbone[k], rtol=0, atol=0)
    assert not torch.equal(
        teacher["state_dict"]["backbone.blocks.1.attn.qkv.weight"], backbone["blocks.1.attn.qkv.weight"]
    )

    # --student-pretrain: the student learnt the same targets first and the student stage started from it
    assert done["student"]["arch"] == "mobilevit_xxs"
    student_backbone = run / "pretrain" / "student" / "backbone.pt"
    assert done["student"]["backbone"] == str(student_backbone) and student_backbone.is_file()
    student = torch.load(run / "student" / "best.pt", weights_only=False)
    assert student["started_from"] == str(student_backbone)
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["pretrain"]["student"] is True and "weights" not in saved["config"]["student"]

    # a second call skips the finished stages
    again = _train_all(tmp_path / "runs", *common)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[pretrain] done earlier" in again.stderr


def test_pretrain_command_errors_are_one_line(tmp_path):
    runs = tmp_path / "runs"
    # the pretrain command takes its own sections' flags (data, pretrain, teacher, student), not the GAN's
    args = [a for i, a in enumerate(ARGS) if not (a.startswith("--gan-") or ARGS[i - 1].startswith("--gan-"))]
    assert "--gan-ratio" in ARGS and "--gan-ratio" not in args
    base = [sys.executable, "-m", "edgeemo", "pretrain", "--runs-dir", str(runs), *args, "--corpus-n", "12"]
    res = subprocess.run([*base, "--name", "none"], capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "nothing to pretrain" in res.stderr.strip().splitlines()[-1]
    missing = [*base, "--name", "missing", "--unlabeled", str(tmp_path / "nowhere")]
    res = subprocess.run(missing, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "unlabeled audio folder not found" in res.stderr.strip().splitlines()[-1]
    (tmp_path / "music").mkdir()
    tone_file(tmp_path / "music" / "a.wav", 21.0, 440, 0.2)
    tone_file(tmp_path / "music" / "b.wav", 21.0, 660, 0.2)
    no_weights = [
        *base, "--name", "noweights", "--unlabeled", str(tmp_path / "music"),
        "--musicnn-weights", str(tmp_path / "absent.safetensors"),
    ]  # fmt: skip
    res = subprocess.run(no_weights, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "musicnn weights not found" in last and "import-musicnn" in last
