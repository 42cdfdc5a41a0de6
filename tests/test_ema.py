"""Weight averaging (EMA): the average against a hand computation, the swap, and the loop's checkpoints and resume."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from torch import nn  # noqa: E402

from edgeemo.errors import TrainingError  # noqa: E402
from edgeemo.train import loop as loop_mod  # noqa: E402
from edgeemo.train.ema import WeightEma  # noqa: E402
from edgeemo.train.models import load_model  # noqa: E402
from tests.train_fixtures import (  # noqa: E402
    FakeRunData,
    fit_student,
    fit_teacher,
    interrupted_on_call,
    learnable_windowset,
    tiny_config,
)

pytestmark = pytest.mark.train


def test_average_matches_a_hand_computation_with_warm_up_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEma(model, decay=0.9)
    w0 = model[0].weight.detach().clone()
    expected = w0.clone()
    for step in range(5):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model[1].num_batches_tracked.add_(3)
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * model[0].weight.detach()
        ema.update(model)
    torch.testing.assert_close(ema.shadow["0.weight"], expected)
    assert ema.updates == 5 and ema.current_decay() == pytest.approx(6 / 15)  # still warming up
    assert int(ema.shadow["1.num_batches_tracked"]) == 15  # copied, not averaged
    raw = model[0].weight.detach().clone()
    with ema.swapped_in(model) as got_raw:
        torch.testing.assert_close(model[0].weight.detach(), expected)
        torch.testing.assert_close(got_raw["0.weight"], raw)
    torch.testing.assert_close(model[0].weight.detach(), raw)  # restored
    with pytest.raises(ValueError, match="decay"):
        WeightEma(model, decay=1.0)


@pytest.fixture(scope="module")
def data():
    return FakeRunData(learnable_windowset(12, seed=0), learnable_windowset(6, seed=1))


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    fit_teacher(data, tiny_config(teacher_epochs=1), out, progress=False)
    return out / "best.pt"


@pytest.mark.slow
def test_student_with_ema_keeps_the_average_and_resumes_exactly(data, teacher, tmp_path, monkeypatch):
    cfg = tiny_config(student_epochs=3, student_ema=0.9)
    straight = fit_student(data, cfg, teacher, tmp_path / "a", progress=False)
    ck = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    assert ck["ema_updates"] > 0
    differs = [
        k
        for k, v in ck["state_dict"].items()
        if v.is_floating_point() and not torch.equal(v, ck["train_state_dict"][k])
    ]
    assert differs  # the kept weights are the average, not the last step's
    # what readers load (export, evaluate) is the averaged, validated model
    model, _ = load_model(tmp_path / "a" / "last.pt")
    torch.testing.assert_close(model.backbone.stem.conv.weight, ck["state_dict"]["student.backbone.stem.conv.weight"])

    with interrupted_on_call(monkeypatch, loop_mod, "window_and_song_report"), pytest.raises(KeyboardInterrupt):
        fit_student(data, cfg, teacher, tmp_path / "b", progress=False)
    resumed = fit_student(data, cfg, teacher, tmp_path / "b", progress=False)
    got = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    for key in ("state_dict", "train_state_dict"):
        for k, v in ck[key].items():
            torch.testing.assert_close(got[key][k], v, rtol=1e-5, atol=1e-6)
    assert resumed.best_metrics["ccc_mean"] == pytest.approx(straight.best_metrics["ccc_mean"], abs=1e-6)

    # a checkpoint made without averaging cannot silently continue with it (and the reverse)
    with pytest.raises(TrainingError, match="weight averaging"):
        fit_student(data, tiny_config(student_epochs=4), teacher, tmp_path / "b", progress=False)
