"""The token-ViT teacher over musicnn tokens, its view-distilled student, and their CV system spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeemo.errors import TrainingError  # noqa: E402
from edgeemo.features import FeatureConfig  # noqa: E402
from edgeemo.train import hybrid  # noqa: E402
from edgeemo.train.models import build_model, load_model  # noqa: E402
from edgeemo.train.tokenvit import TOKEN_VIT, token_vit_spec  # noqa: E402
from edgeemo.train.views import N_TOKENS, TOKEN_DIM, FileView  # noqa: E402
from edgeemo.train.viewset import ViewSet  # noqa: E402

FEATURES = FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=500, n_mels=32, n_frames=32, window_hop_s=0.5)


def synthetic_viewset(n_items: int, seed: int, labelled: bool = True) -> ViewSet:
    """Items whose label signs are written into token channels 0/1 and mel rows 0-3 (learnable by both models)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([-1.0, 1.0], size=(n_items, 2)).astype(np.float32)
    fviews, entries, rows = [], [], []
    for i in range(n_items):
        mel = rng.standard_normal((FEATURES.n_mels, 64)).astype(np.float16)
        mel[:2] += np.float16(2 * labels[i, 0])
        mel[2:4] += np.float16(2 * labels[i, 1])
        tokens = rng.standard_normal((40, TOKEN_DIM)).astype(np.float16)
        tokens[:, :8] += np.float16(2 * labels[i, 0])
        tokens[:, 8:16] += np.float16(2 * labels[i, 1])
        fv = FileView(mel, tokens)
        e = len(fviews)
        fviews.append(fv)
        entries.append((i, 0))
        n = fv.n_windows(FEATURES)
        rows.append(np.stack([np.full(n, e), np.arange(n)], axis=1))
    lab = labels if labelled else np.full_like(labels, np.nan)
    items = [Path(f"item{i}.wav") for i in range(n_items)]
    return ViewSet(FEATURES, items, lab, entries, fviews, np.concatenate(rows))


def test_token_vit_shapes_and_standardises_its_input():
    model = build_model(token_vit_spec(dim=32, depth=2, heads=2))
    assert model.width == 32 and model.spec["arch"] == TOKEN_VIT
    model.eval()
    x = torch.randn(3, N_TOKENS, TOKEN_DIM)
    out = model(x)
    assert out.shape == (3, 2) and torch.all(out.abs() <= 1)
    model.backbone.set_token_stats(np.full(TOKEN_DIM, 5.0), np.full(TOKEN_DIM, 2.0))
    np.testing.assert_allclose(
        model.backbone(x * 2 + 5).detach(),
        model.backbone.__class__.forward(_unit_stats(model.backbone), x).detach(),
        atol=1e-5,
    )


def _unit_stats(backbone):
    import copy

    other = copy.deepcopy(backbone)
    other.set_token_stats(np.zeros(TOKEN_DIM), np.ones(TOKEN_DIM))
    return other


def test_teacher_learns_the_token_signal_and_resumes_without_retraining(tmp_path):
    train, val = synthetic_viewset(24, 0), synthetic_viewset(8, 1)
    settings = hybrid.TokenTeacherSettings(
        dim=32, depth=1, heads=2, epochs=8, lr=2e-3, windows_per_entry=8, batch_size=16
    )
    model, res = hybrid.train_token_teacher(train, val, tmp_path / "t", settings, device="cpu")
    assert res.best_metrics["ccc_mean"] > 0.6
    assert res.best_metrics["valence_auc"] == 1.0 and res.best_metrics["arousal_auc"] == 1.0
    out = hybrid.token_teacher_outputs(model, val, device="cpu")
    assert out.shape == (len(val), 2)
    means = val.item_means(out)
    assert all(np.corrcoef(means[:, d], val.labels[:, d])[0, 1] > 0.8 for d in (0, 1))
    again, res2 = hybrid.train_token_teacher(train, val, tmp_path / "t", settings, device="cpu")
    assert res2.history == res.history  # all epochs were in last.pt: nothing retrained
    np.testing.assert_allclose(hybrid.token_teacher_outputs(again, val, device="cpu"), out, atol=1e-6)
    reloaded, _ = load_model(tmp_path / "t" / "best.pt")
    np.testing.assert_allclose(hybrid.token_teacher_outputs(reloaded, val, device="cpu"), out, atol=1e-6)


def test_the_probe_teacher_starts_as_the_ridge_probe_and_keeps_it_frozen(tmp_path):
    from edgeemo.train.tokenvit import pooled_tokens
    from edgeemo.train.viewset import TokenWindows

    train, val = synthetic_viewset(64, 0), synthetic_viewset(12, 1)
    data = TokenWindows(train)
    mean, std, weight, bias = hybrid.fit_ridge_probe(data, 10.0)
    x = (pooled_tokens(np.stack([data.data.tokens(i) for i in range(len(data))])) - mean) / std
    fitted = x @ weight.T + bias
    # the closed form is the ridge optimum: its gradient vanishes
    grad = x.T @ (fitted - data.labels) + 10.0 * weight.T
    assert np.abs(grad).max() < 1e-6 * len(data)
    assert np.corrcoef(fitted[:, 0], data.labels[:, 0])[0, 1] > 0.9  # the token signal is linear: the probe sees it
    model = build_model(token_vit_spec(dim=32, depth=1, heads=2, probe=True)).eval()
    model.backbone.set_token_stats(*hybrid.token_stats(train))
    model.backbone.set_probe(mean, std, weight, bias)
    x_t = torch.from_numpy(np.stack([data.data.tokens(i) for i in range(8)]))
    np.testing.assert_allclose(model(x_t).detach().numpy(), np.clip(fitted[:8], -1, 1), atol=1e-4)
    settings = hybrid.TokenTeacherSettings(
        dim=32, depth=1, heads=2, epochs=2, lr=1e-3, windows_per_entry=4, batch_size=16, probe_alpha=1e3
    )
    trained, res = hybrid.train_token_teacher(train, val, tmp_path / "p", settings, device="cpu")
    w_1e3 = hybrid.fit_ridge_probe(data, 1e3)[2]
    np.testing.assert_allclose(trained.backbone.probe.weight.numpy(), w_1e3, rtol=1e-4, atol=1e-6)
    assert res.best_metrics["valence_auc"] > 0.9 and res.best_metrics["arousal_auc"] > 0.9
    with pytest.raises(TrainingError, match="alpha must be > 0"):
        hybrid.fit_ridge_probe(data, 0.0)


def test_an_interrupted_teacher_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from tests.train_fixtures import interrupted_on_call

    train, val = synthetic_viewset(12, 0), synthetic_viewset(6, 1)
    settings = hybrid.TokenTeacherSettings(
        dim=32, depth=1, heads=2, epochs=4, lr=2e-3, windows_per_entry=4, batch_size=8
    )
    whole, res = hybrid.train_token_teacher(train, val, tmp_path / "whole", settings, device="cpu")
    with interrupted_on_call(monkeypatch, hybrid, "viewset_report"), pytest.raises(KeyboardInterrupt):
        hybrid.train_token_teacher(train, val, tmp_path / "cut", settings, device="cpu")
    assert (tmp_path / "cut" / "last.pt").is_file()
    resumed, res2 = hybrid.train_token_teacher(train, val, tmp_path / "cut", settings, device="cpu")
    assert [h["val_ccc_mean"] for h in res2.history] == pytest.approx([h["val_ccc_mean"] for h in res.history])
    np.testing.assert_allclose(
        hybrid.token_teacher_outputs(resumed, val, device="cpu"),
        hybrid.token_teacher_outputs(whole, val, device="cpu"),
        atol=1e-5,
    )


def test_distillation_loss_ignores_labels_of_unlabeled_windows():
    student = build_model({"role": "student", "arch": "mobilevit_xxs", "input_shape": [32, 32], "kwargs": {}})
    stage = hybrid.ViewDistillStage(student, hybrid.ViewStudentSettings(task_weight=0.5, output_weight=1.0), FEATURES)
    student.eval()
    x = torch.randn(4, 1, 32, 32)
    out = student(x).detach()
    target = torch.zeros(4, 5)
    target[:2, :2] = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    target[:2, 2] = 1.0
    target[2:, :2] = 100.0  # garbage labels on unlabeled rows must not count
    target[:, 3:] = out + 0.5
    total, terms = stage.loss(x, target)
    task = ((out[:2] - target[:2, :2]) ** 2).mean().item()
    assert terms["task"] == pytest.approx(task, rel=1e-5)
    assert terms["kd"] == pytest.approx(0.25, rel=1e-5)
    assert total.item() == pytest.approx(0.5 * task + 0.25, rel=1e-5)
    mixing = hybrid.ViewDistillStage(student, hybrid.ViewStudentSettings(task_weight=0.5, mixup=0.4), FEATURES)
    assert mixing.loss(x, target)[0].item() == pytest.approx(total.item(), rel=1e-6)  # evaluation never mixes
    student.train()
    torch.manual_seed(0)
    mixed, _ = mixing.loss(x, target)
    torch.manual_seed(0)
    plain = hybrid.ViewDistillStage(student, hybrid.ViewStudentSettings(task_weight=0.5), FEATURES)
    assert mixed.item() != pytest.approx(plain.loss(x, target)[0].item(), rel=1e-3)  # training does
    student.eval()


def test_feature_targets_are_the_standardised_pooled_tokens_and_enter_the_loss():
    from edgeemo.train.tokenvit import pooled_tokens
    from edgeemo.train.viewset import MelWindows

    data = synthetic_viewset(3, 5)
    stats = hybrid.pooled_token_stats(data)
    pooled = pooled_tokens(np.stack([data.tokens(i) for i in range(len(data))]))
    np.testing.assert_allclose(stats[0], pooled.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats[1], np.maximum(pooled.std(axis=0), 1e-3), rtol=1e-4, atol=1e-4)
    windows = MelWindows(data, np.zeros((len(data), 2)), stats)
    _, target = windows[4]
    assert target.shape == (5 + TOKEN_DIM,)
    np.testing.assert_allclose(target[5:].numpy(), (pooled[4] - stats[0]) / stats[1], rtol=1e-4, atol=1e-4)
    assert MelWindows(data, np.zeros((len(data), 2)))[4][1].shape == (5,)

    student = build_model({"role": "student", "arch": "mobilevit_xxs", "input_shape": [32, 32], "kwargs": {}})
    settings = hybrid.ViewStudentSettings(task_weight=0.0, output_weight=0.0, feature_weight=2.0)
    stage = hybrid.ViewDistillStage(student, settings, FEATURES)
    assert set(stage.model.keys()) == {"student", "proj"}
    student.eval()
    x = torch.randn(4, 1, 32, 32)
    feats = student.forward_features(x)
    target = torch.zeros(4, 5 + TOKEN_DIM)
    target[:, 5:] = stage.proj(feats).detach()  # the projected features match: no feature loss
    total, terms = stage.loss(x, target)
    assert terms["feat"] == pytest.approx(0.0, abs=1e-5) and total.item() == pytest.approx(0.0, abs=1e-4)
    target[:, 5:] = -target[:, 5:]  # opposite direction: 1 - cos = 2, weighted 2
    total, terms = stage.loss(x, target)
    assert terms["feat"] == pytest.approx(2.0, abs=1e-4) and total.item() == pytest.approx(4.0, abs=1e-3)
    assert (
        "feat" not in hybrid.ViewDistillStage(student, hybrid.ViewStudentSettings(), FEATURES).loss(x, target[:, :5])[1]
    )


@pytest.mark.slow
def test_student_learns_from_teacher_outputs_on_unlabeled_windows(tmp_path):
    from edgeemo.train.viewset import concat_viewsets

    labelled, unlabeled, val = (
        synthetic_viewset(4, 2),
        synthetic_viewset(24, 3, labelled=False),
        synthetic_viewset(8, 4),
    )
    data = concat_viewsets(labelled, unlabeled)
    # the "teacher" knows the signs of the unlabeled items: only distillation can teach them
    truth = np.concatenate([labelled.labels, np.sign(synthetic_viewset(24, 3).labels)])
    teacher = truth[data.item_of()] * 0.9
    settings = hybrid.ViewStudentSettings(epochs=3, lr=3e-3, windows_per_entry=8, batch_size=16)
    _, res = hybrid.train_view_student(data, teacher, val, tmp_path / "s", settings, device="cpu")
    labels_only = hybrid.ViewStudentSettings(epochs=3, lr=3e-3, windows_per_entry=8, batch_size=16, output_weight=0.0)
    _, alone = hybrid.train_view_student(data, teacher, val, tmp_path / "l", labels_only, device="cpu")
    assert res.best_metrics["ccc_mean"] > 0.35
    assert res.best_metrics["ccc_mean"] > alone.best_metrics["ccc_mean"] + 0.1
    with_features = hybrid.ViewStudentSettings(
        epochs=3, lr=3e-3, windows_per_entry=8, batch_size=16, feature_weight=0.5
    )
    student, feat = hybrid.train_view_student(data, teacher, val, tmp_path / "f", with_features, device="cpu")
    assert all(np.isfinite(h["train_feat"]) for h in feat.history)  # the feature term is trained and logged
    assert feat.best_metrics["ccc_mean"] > 0.35
    reloaded, _ = load_model(tmp_path / "f" / "best.pt")  # the projection stays in the checkpoint, not the model
    assert set(reloaded.state_dict()) == set(student.state_dict())
    with pytest.raises(TrainingError, match="do not match"):
        hybrid.train_view_student(data, teacher[:-1], val, tmp_path / "s2", settings, device="cpu")


@pytest.mark.parametrize(("select", "kept"), [("best", 2), ("last", 3)])
def test_the_student_keeps_the_best_validated_or_the_last_epoch(tmp_path, monkeypatch, select, kept):
    import torch as torch_mod

    scores = iter([0.2, 0.7, 0.4])

    def fake_report(data, preds):
        s = next(scores)
        return {"ccc_valence": s, "ccc_arousal": s, "ccc_mean": s}

    monkeypatch.setattr(hybrid, "viewset_report", fake_report)
    train, val = synthetic_viewset(4, 7), synthetic_viewset(2, 8)
    settings = hybrid.ViewStudentSettings(epochs=3, windows_per_entry=2, batch_size=8, select=select)
    _, res = hybrid.train_view_student(train, np.zeros((len(train), 2)), val, tmp_path / "s", settings, device="cpu")
    assert res.best_epoch == kept
    assert torch_mod.load(tmp_path / "s" / "best.pt", weights_only=False)["epoch"] == kept


def test_student_select_is_a_config_field_that_keeps_old_digests():
    from edgeemo.config import RunConfig, StageContext
    from edgeemo.errors import EdgeemoError
    from edgeemo.train.loop import stage_fit_config

    cfg = RunConfig()
    assert cfg.student.select == "best" and stage_fit_config(cfg.student, StageContext.of(cfg)).select == "best"
    last = cfg.replace({"student.select": "last"})
    assert stage_fit_config(last.student, StageContext.of(last)).select == "last"
    assert last.digest() != cfg.digest() == cfg.replace({"student.select": "best"}).digest()
    with pytest.raises(EdgeemoError, match="select"):
        cfg.replace({"student.select": "worst"})
