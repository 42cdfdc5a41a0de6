"""Teacher, student and the shared fit loop: freezing, groups, accumulation, selection, resume, NaN, distillation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from edgeemo.errors import EdgeemoError, TrainingError  # noqa: E402
from edgeemo.train import loop as loop_mod  # noqa: E402
from edgeemo.train.distill import DistillStage  # noqa: E402
from edgeemo.train.loop import FitConfig, fit  # noqa: E402
from edgeemo.train.models import (  # noqa: E402
    build_model,
    freeze_for_finetuning,
    load_model,
    param_groups,
    student_spec,
    teacher_spec,
)
from edgeemo.train.teacher import TeacherStage, ccc_loss  # noqa: E402
from tests.train_fixtures import (  # noqa: E402
    FakeRunData,
    ctx,
    fit_student,
    fit_teacher,
    interrupted_on_call,
    learnable_windowset,
    teacher_of,
    tiny_config,
)


@pytest.fixture(scope="module")
def data():
    return FakeRunData(learnable_windowset(12, seed=0), learnable_windowset(6, seed=1))


def test_partial_finetuning_freezes_all_but_last_blocks():
    model = build_model(teacher_spec("vit_tiny_patch16_224", (32, 64), depth=6))
    freeze_for_finetuning(model, 4)
    blocks = model.backbone.blocks
    assert not any(p.requires_grad for b in blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for b in blocks[2:] for p in b.parameters())
    assert all(p.requires_grad for p in model.backbone.norm.parameters())
    assert not model.backbone.patch_embed.proj.weight.requires_grad
    assert all(p.requires_grad for p in model.head.parameters())


def test_pretrained_teacher_is_frozen_but_scratch_teacher_trains_everything(tmp_path):
    scratch = teacher_of(tiny_config(teacher_depth=3))
    assert all(p.requires_grad for p in scratch.parameters())
    # a local weights file (what --teacher-weights reads): timm adapts it to 1 channel and our window size
    ref = build_model(teacher_spec("vit_tiny_patch16_224", (32, 64), depth=3))
    path = tmp_path / "w.pth"
    torch.save(ref.backbone.state_dict(), path)
    model = teacher_of(tiny_config(teacher_depth=3, teacher_weights=str(path), teacher_trainable_blocks=1))
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, ref.backbone.blocks[0].attn.qkv.weight)
    assert not model.backbone.blocks[0].attn.qkv.weight.requires_grad
    assert model.backbone.blocks[2].attn.qkv.weight.requires_grad


def test_teacher_pool_and_patch_shape_reach_the_vit_and_survive_the_config_round_trip():
    from edgeemo.config import RunConfig

    cfg = tiny_config(teacher_pool="avg", teacher_patch=(8, 32))
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())), strict=True)
    assert again == cfg and again.teacher.patch == (8, 32) and again.teacher.pool == "avg"
    model = teacher_of(again)
    assert tuple(model.backbone.patch_embed.grid_size) == (32 // 8, 64 // 32)
    assert model.backbone.global_pool == "avg"
    x = torch.randn(3, 1, 32, 64)
    # mean pooling: the pooled feature is the (then normed) mean of the patch tokens, the class token left out
    tokens = model.backbone.forward_features(x)
    torch.testing.assert_close(model.forward_features(x), model.backbone.fc_norm(tokens[:, 1:].mean(1)))
    assert teacher_of(tiny_config()).backbone.patch_embed.grid_size == (4, 2)  # the tiny preset's 8 x 32
    vit_own = tiny_config(teacher_patch=None)
    assert teacher_of(vit_own).backbone.patch_embed.grid_size == (2, 4)  # the ViT's own 16 x 16
    with pytest.raises(TrainingError, match="must tile"):
        teacher_of(tiny_config(teacher_patch=(5, 32)))
    with pytest.raises(EdgeemoError, match=r"teacher\.pool must be one of token, avg"):
        tiny_config(teacher_pool="max")


def test_teacher_drop_path_ramps_over_the_blocks_and_is_off_in_eval():
    model = teacher_of(tiny_config(teacher_depth=3, teacher_drop_path=0.2))
    rates = [getattr(blk.drop_path1, "drop_prob", 0.0) for blk in model.backbone.blocks]  # 0: an Identity
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    x = torch.randn(2, 1, 32, 64)
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # no stochastic depth at inference
    assert not hasattr(teacher_of(tiny_config(teacher_depth=3)).backbone.blocks[2].drop_path1, "drop_prob")
    with pytest.raises(EdgeemoError, match=r"teacher\.drop_path must be < 1\.0"):
        tiny_config(teacher_drop_path=1.0)


def test_missing_weights_file_is_a_one_line_error(tmp_path):
    with pytest.raises(TrainingError, match="not found"):
        teacher_of(tiny_config(teacher_weights=str(tmp_path / "nope.pth")))


def test_param_groups_backbone_lr_is_a_tenth_of_head():
    model = build_model(teacher_spec("vit_tiny_patch16_224", (32, 64), depth=2))
    groups = {g["name"]: g for g in param_groups(model, 1e-3, 0.1, 0.05)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    n_group = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n_group == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_optimizer_steps_once_per_accumulation_window(data, tmp_path, monkeypatch):
    cfg = tiny_config(accum_steps=4, batch_size=2, teacher_epochs=1)
    steps = []
    orig = torch.optim.AdamW.step

    def counting_step(self, *a, **k):
        steps.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    fit_teacher(data, cfg, tmp_path / "t", progress=False)
    n_windows = 12 * 2  # 12 songs x 2 windows per song
    micro_batches = -(-n_windows // 2)
    assert len(steps) == -(-micro_batches // 4)


def test_model_selection_uses_validation_ccc_not_loss(data, tmp_path, monkeypatch):
    scores = iter([0.2, 0.7, 0.4])

    def fake_report(windows, preds):
        s = next(scores)
        return {"ccc_valence": s, "ccc_arousal": s, "ccc_mean": s}

    monkeypatch.setattr(loop_mod, "window_and_song_report", fake_report)
    result = fit_teacher(data, tiny_config(teacher_epochs=3), tmp_path / "t", progress=False)
    assert result.best_epoch == 2
    best = torch.load(tmp_path / "t" / "best.pt", weights_only=False)
    assert best["epoch"] == 2
    lines = (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert (tmp_path / "t" / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("augment", [{}, {"augment_shift": 2, "augment_time_mask": 8}], ids=["plain", "augmented"])
@pytest.mark.slow
def test_resume_equals_uninterrupted_run(data, tmp_path, monkeypatch, augment):
    cfg = tiny_config(teacher_epochs=3, **augment)
    straight = fit_teacher(data, cfg, tmp_path / "a", progress=False)
    # interrupt the same run during epoch 3's validation (epochs 1-2 are checkpointed), then resume
    with interrupted_on_call(monkeypatch, loop_mod, "window_and_song_report"), pytest.raises(KeyboardInterrupt):
        fit_teacher(data, cfg, tmp_path / "c", progress=False)
    assert torch.load(tmp_path / "c" / "last.pt", weights_only=False)["epoch"] == 2
    resumed = fit_teacher(data, cfg, tmp_path / "c", progress=False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["state_dict"]
    c = torch.load(tmp_path / "c" / "last.pt", weights_only=False)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], c[k], rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.best_metrics["ccc_mean"] == pytest.approx(straight.best_metrics["ccc_mean"], abs=1e-6)
    assert (tmp_path / "a" / "metrics.jsonl").read_text().count("\n") == 3
    assert (tmp_path / "c" / "metrics.jsonl").read_text().count("\n") == 3


def test_nan_loss_stops_with_epoch_and_keeps_checkpoint(data, tmp_path, monkeypatch):
    out = tmp_path / "t"
    fit_teacher(data, tiny_config(teacher_epochs=1), out, progress=False)
    before = (out / "last.pt").read_bytes()
    monkeypatch.setattr(TeacherStage, "loss", lambda self, x, y: (torch.tensor(float("nan")), {}))
    with pytest.raises(TrainingError, match=r"epoch 2.*last good checkpoint"):
        fit_teacher(data, tiny_config(teacher_epochs=2), out, progress=False)
    assert (out / "last.pt").read_bytes() == before


def test_ccc_loss_matches_numpy_ccc():
    from edgeemo.metrics import ccc

    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, (50, 2))
    p = y * 0.5 + rng.normal(0, 0.2, (50, 2))
    expected = 1 - np.mean([ccc(y[:, i], p[:, i]) for i in range(2)])
    got = ccc_loss(torch.tensor(p), torch.tensor(y)).item()
    assert got == pytest.approx(expected, abs=1e-6)


def _distill_stage(cfg):
    torch.manual_seed(0)
    student = build_model(student_spec("mobilevit_xxs", (32, 64)))
    return DistillStage(student, 192, cfg.student, ctx(cfg), teacher_val_ccc=0.8)


@pytest.mark.parametrize("weight", ["alpha", "beta", "gamma"])
def test_each_distillation_term_changes_the_gradient(weight):
    x = torch.randn(4, 1, 32, 64)
    target = torch.cat([torch.rand(4, 2) * 2 - 1, torch.rand(4, 2) * 2 - 1, torch.randn(4, 192)], 1)
    grads = []
    for value in (0.5, 1.5):
        stage = _distill_stage(tiny_config(**{weight: value}))
        stage.model.train()
        torch.manual_seed(1)  # same dropout masks
        loss, terms = stage.loss(x, target)
        loss.backward()
        grads.append(stage.student.backbone.stem.conv.weight.grad.clone())
        assert set(terms) == {"loss", "task", "kd", "feat"}
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.slow
def test_distillation_uses_the_shared_loop_and_reports_retention(data, tmp_path, monkeypatch):
    teacher_dir = tmp_path / "teacher"
    fit_teacher(data, tiny_config(), teacher_dir, progress=False)
    calls = []
    real_fit = fit

    def spy(stage, *a, **k):
        calls.append(stage.name)
        return real_fit(stage, *a, **k)

    import edgeemo.train.distill as distill_mod

    monkeypatch.setattr(distill_mod, "fit", spy)
    result = fit_student(data, tiny_config(), teacher_dir / "best.pt", tmp_path / "student", progress=False)
    assert calls == ["student"]
    rec = result.history[-1]
    for k in ("train_task", "train_kd", "train_feat", "val_retention"):
        assert k in rec
    ck = torch.load(tmp_path / "student" / "best.pt", weights_only=False)
    assert rec["val_retention"] == pytest.approx(rec["val_ccc_mean"] / ck["teacher_val_ccc_mean"])
    model, _ = load_model(tmp_path / "student" / "best.pt")
    assert model.spec["role"] == "student"


def test_fit_uses_the_same_code_for_teacher():
    import inspect

    import edgeemo.train.teacher as teacher_mod

    assert teacher_mod.fit is loop_mod.fit
    assert "def fit(" not in inspect.getsource(teacher_mod)
    assert isinstance(FitConfig().clip_norm, float)
