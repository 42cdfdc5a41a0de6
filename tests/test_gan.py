"""The conditional GAN and its stabilised recipe, checked on what training actually does.

A tiny structured WindowSet (32 mels x 64 frames) keeps every training run to a few
seconds: the optimiser steps, clipping calls and D inputs are spied on during real runs.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeemo.config import StageContext  # noqa: E402
from edgeemo.data.types import Song  # noqa: E402
from edgeemo.data.windows import WindowSet  # noqa: E402
from edgeemo.errors import EdgeemoError, TrainingError  # noqa: E402
from edgeemo.features import FeatureConfig  # noqa: E402
from edgeemo.train import gan as gan_mod  # noqa: E402
from edgeemo.train.gan import (  # noqa: E402
    Discriminator,
    GanSampler,
    Generator,
    build_gan,
    count_parameters,
    d_step_due,
    diversity,
    health_check,
    noise_std,
    optimizer_step,
    smoothed_targets,
    train_gan,
)
from tests.train_fixtures import tiny_config  # noqa: E402

FEATURES = FeatureConfig(n_mels=32, n_frames=64, hop_length=500)  # windows every 16 frames
N_SONGS, PER_SONG, BATCH = 5, 2, 4  # 10 windows an epoch -> 3 iterations of <= 4
EPOCHS = 3


def make_windows(n_songs: int = N_SONGS, seed: int = 0, constant: float | None = None) -> WindowSet:
    """Songs whose frames encode their labels (low bands ~ valence, high bands ~ arousal), 4 windows each."""
    rng = np.random.default_rng(seed)
    n_total = FEATURES.n_frames + 3 * FEATURES.window_hop_frames
    songs, frames, index, targets = [], [], [], []
    for s in range(n_songs):
        v, a = rng.uniform(-0.9, 0.9, 2)
        if constant is None:
            f = rng.normal(1.0, 0.3, (FEATURES.n_mels, n_total)).astype(np.float32)
            f[: FEATURES.n_mels // 2] += v
            f[FEATURES.n_mels // 2 :] += a * np.sin(np.arange(n_total) / 4.0)
        else:
            f = np.full((FEATURES.n_mels, n_total), constant, np.float32)
        songs.append(Song(id=f"s{s}", path=Path(f"/nonexistent/s{s}.wav"), valence=float(v), arousal=float(a)))
        frames.append(f)
        n = FEATURES.n_windows(n_total)
        index.append(np.stack([np.full(n, s), np.arange(n)], 1))
        targets.append(np.tile([v, a], (n, 1)))
    return WindowSet(
        cfg=FEATURES,
        songs=songs,
        frames=frames,
        index=np.concatenate(index).astype(np.int64),
        targets=np.concatenate(targets).astype(np.float32),
        failed=[],
    )


def gan_config(**kw):
    base = dict(
        features=FEATURES,
        gan_epochs=EPOCHS,
        gan_batch_size=BATCH,
        gan_latent_dim=8,
        train_windows_per_song=PER_SONG,
        device="cpu",
    )
    base.update(kw)
    return tiny_config(**base)


def fit_gan(train, cfg, out, **kw):
    return train_gan(train, cfg.gan, StageContext.of(cfg), out, **kw)


def gan_nets(cfg):
    return build_gan(cfg.gan, cfg.features.shape)


class Spy:
    """Counts optimiser steps (per optimiser) and gradient clipping calls during a training run."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.steps = {"g": 0, "d": 0}
        self.clip_norms: list[float] = []
        self.lrs: dict[str, float] = {}
        real_build, real_clip = gan_mod.build_gan, gan_mod.clip_gradients

        def build(cfg, shape):
            g, d, opt_g, opt_d = real_build(cfg, shape)
            for name, opt in (("g", opt_g), ("d", opt_d)):
                self.lrs[name] = opt.param_groups[0]["lr"]
                step = opt.step

                def counted(*a, _name=name, _step=step, **k):
                    self.steps[_name] += 1
                    return _step(*a, **k)

                opt.step = counted
            return g, d, opt_g, opt_d

        def clip(module, max_norm=gan_mod.CLIP_NORM):
            self.clip_norms.append(max_norm)
            return real_clip(module, max_norm)

        mp.setattr(gan_mod, "build_gan", build)
        mp.setattr(gan_mod, "clip_gradients", clip)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are tiny: one intra-op thread is faster, and far faster on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train():
    return make_windows()


@pytest.fixture(scope="module")
def straight(train, tmp_path_factory):
    """An uninterrupted 3-epoch run, with its optimiser steps counted and its stderr kept."""
    out = tmp_path_factory.mktemp("gan") / "straight"
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        spy = Spy(mp)
        result = fit_gan(train, gan_config(), out, progress=False)
    return result, out, spy, err.getvalue()


# ----------------------------------------------------------------------------- recipe rules
def test_noise_schedule_decays_linearly_and_clamps_at_the_floor():
    assert noise_std(0, 10, 0.1, 0.01) == pytest.approx(0.1)  # first epoch: full std
    assert noise_std(5, 10, 0.1, 0.01) == pytest.approx(0.05)  # halfway
    assert noise_std(9, 10, 0.1, 0.01) == pytest.approx(0.01)  # 0.1 * 0.1 = 0.01
    assert noise_std(10, 10, 0.1, 0.01) == pytest.approx(0.01)
    assert noise_std(14, 15, 0.1, 0.02) == pytest.approx(0.02)  # clamped
    stds = [noise_std(e, 15, 0.1, 0.01) for e in range(15)]
    assert all(a >= b for a, b in itertools.pairwise(stds))


def test_discriminator_step_pattern():
    assert [d_step_due(i, 2) for i in range(6)] == [True, False, True, False, True, False]
    assert [d_step_due(i, 3) for i in range(7)] == [True, False, False, True, False, False, True]
    assert all(d_step_due(i, 1) for i in range(4))


def test_label_smoothing_targets():
    cfg = gan_config()
    assert torch.equal(smoothed_targets(3, True, cfg.gan), torch.full((3,), 0.9))
    assert torch.equal(smoothed_targets(3, False, cfg.gan), torch.full((3,), 0.1))
    other = gan_config(gan_real_label=0.8, gan_fake_label=0.0)
    assert smoothed_targets(2, True, other.gan).tolist() == pytest.approx([0.8, 0.8])
    assert smoothed_targets(2, False, other.gan).tolist() == [0.0, 0.0]


def test_discriminator_lr_is_half_the_generator_lr_with_dcgan_betas():
    _, _, opt_g, opt_d = gan_nets(gan_config(gan_lr=4e-4))
    assert opt_g.param_groups[0]["lr"] == pytest.approx(4e-4)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2e-4)
    assert opt_g.param_groups[0]["betas"] == opt_d.param_groups[0]["betas"] == (0.5, 0.999)
    _, _, opt_g, opt_d = gan_nets(gan_config(gan_lr=1e-3, gan_d_lr_mult=0.25))
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.25 * opt_g.param_groups[0]["lr"])


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_optimizer_step_clips_the_gradient_norm_before_stepping(which):
    torch.manual_seed(0)
    g, d, _, _ = gan_nets(gan_config())
    net = g if which == "generator" else d
    z, y = torch.randn(4, 8), torch.rand(4, 2) * 2 - 1
    x = g(z, y).detach()
    loss = (g(z, y) ** 2).sum() * 1e6 if net is g else d(x, y).sum() * 1e6
    before = [p.detach().clone() for p in net.parameters()]
    sgd = torch.optim.SGD(net.parameters(), lr=1.0)  # so the update equals the (clipped) gradient
    norm = optimizer_step(loss, net, sgd)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    after = math.sqrt(sum(float(gr.norm() ** 2) for gr in grads))
    moved = math.sqrt(sum(float((p.detach() - b).norm() ** 2) for p, b in zip(net.parameters(), before, strict=True)))
    assert norm > 1e3
    assert after <= 1.0 + 1e-4 and moved <= 1.0 + 1e-4
    assert after == pytest.approx(1.0, rel=1e-3)


def test_nets_fit_both_window_sizes_and_stay_small():
    for shape in ((32, 64), (64, 128), (128, 256)):
        g, d = Generator(shape, 16).eval(), Discriminator(shape)
        with torch.no_grad():
            x = g(torch.randn(2, 16), torch.zeros(2, 2))
            assert x.shape == (2, 1, *shape)
            assert d(x, torch.zeros(2, 2)).shape == (2,)
    g, d, _, _ = gan_nets(tiny_config(features=FeatureConfig(), gan_latent_dim=64))  # 64 x 128, latent 64
    assert count_parameters(g) <= 1_000_000 and count_parameters(d) <= 1_000_000
    with pytest.raises(TrainingError, match="divisible by 16"):
        Generator((40, 64))


def test_generator_is_conditioned_on_the_labels():
    torch.manual_seed(0)
    g = Generator((32, 64), 8).eval()
    z = torch.randn(1, 8).repeat(2, 1)
    with torch.no_grad():
        x = g(z, torch.tensor([[0.8, 0.8], [-0.8, -0.8]]))
        same = g(z, torch.tensor([[0.8, 0.8], [0.8, 0.8]]))
    assert torch.equal(same[0], same[1])
    assert not torch.allclose(x[0], x[1])


def test_bad_settings_are_one_line_errors(train, tmp_path):
    with pytest.raises(EdgeemoError, match=r"gan\.d_every must be >= 1"):
        gan_config(gan_d_every=0)
    with pytest.raises(EdgeemoError, match=r"gan\.fake_label < gan\.real_label"):
        gan_config(gan_real_label=0.1, gan_fake_label=0.9)
    with pytest.raises(TrainingError, match="divisible by 16"):  # the GAN's own check, on windows it cannot make
        fit_gan(train, gan_config(features=FeatureConfig(n_mels=40, n_frames=64)), tmp_path, progress=False)


# ----------------------------------------------------------------------------- a real run
def test_run_takes_the_recipe_steps(straight):
    result, _, spy, _ = straight
    iterations = math.ceil(N_SONGS * PER_SONG / BATCH)
    assert len(result.history) == EPOCHS
    for rec in result.history:
        assert rec["iterations"] == iterations
        assert rec["d_steps"] == math.ceil(iterations / 2)
        assert rec["g_steps"] == 2 * iterations
    assert spy.steps == {"d": EPOCHS * math.ceil(iterations / 2), "g": EPOCHS * 2 * iterations}
    # every optimiser step went through clipping at 1.0
    assert len(spy.clip_norms) == spy.steps["d"] + spy.steps["g"]
    assert set(spy.clip_norms) == {1.0}
    assert spy.lrs["d"] == pytest.approx(0.5 * spy.lrs["g"])


def test_run_records_and_logs_every_epoch(straight):
    result, out, _, err = straight
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    keys = {"epoch", "D_loss", "G_loss", "D_real", "D_fake", "noise_std", "d_steps", "g_steps", "seconds"}
    assert all(keys <= set(r) for r in lines)
    assert [r["noise_std"] for r in lines] == pytest.approx([noise_std(e, EPOCHS, 0.1, 0.01) for e in range(EPOCHS)])
    for r in lines:
        assert 0 < r["D_real"] < 1 and 0 < r["D_fake"] < 1 and r["D_loss"] > 0 and r["G_loss"] > 0
    for name in ("last.pt", "gen.pt", "curves.png", "samples.png", "health.json"):
        assert (out / name).is_file(), name
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert err.count("[gan] epoch ") == EPOCHS
    assert "D_real" in err and "D_fake" in err
    assert "lr G 0.0002, D 0.0001 (x0.5)" in err and "grad clip 1" in err  # the recipe line
    health = json.loads((out / "health.json").read_text())
    assert health == result.health and isinstance(health["ok"], bool)
    assert [ln for ln in err.splitlines() if ln.startswith("GAN health:")]
    assert result.diversity_ratio == pytest.approx(health["diversity_ratio"])


def test_instance_noise_reaches_real_and_fake_inputs(tmp_path, monkeypatch):
    """All-zero real windows: D's real inputs are pure noise; its fake inputs are G's output plus noise."""
    zeros = make_windows(constant=0.0)
    cfg = gan_config(gan_epochs=1, gan_batch_size=2, gan_d_every=3, gan_g_steps=1, gan_noise_std=0.5)
    calls: list[tuple[str, torch.Tensor]] = []
    real_build = gan_mod.build_gan

    def build(c, shape):
        g, d, opt_g, opt_d = real_build(c, shape)
        g.register_forward_hook(lambda m, i, o: calls.append(("G", o.detach().clone())))
        d.register_forward_pre_hook(lambda m, i: calls.append(("D", i[0].detach().clone())))
        return g, d, opt_g, opt_d

    monkeypatch.setattr(gan_mod, "build_gan", build)
    result = fit_gan(zeros, cfg, tmp_path, progress=False)
    iterations = math.ceil(N_SONGS * PER_SONG / 2)  # 5
    assert result.history[0]["d_steps"] == 2  # iterations 0 and 3 with d_every 3
    assert result.history[0]["g_steps"] == iterations
    training = calls[: 2 * 2 + 2 * iterations]  # D step: G then D; G step: G then D
    assert all(kind == "G" for kind, _ in calls[len(training) :])  # after training only G ran (the epoch's FD)
    real_noise, fake_noise = [], []
    for (kind_g, fake), (kind_d, x) in zip(training[0::2], training[1::2], strict=True):
        assert (kind_g, kind_d) == ("G", "D")
        n = fake.shape[0]
        if x.shape[0] == 2 * n:  # a D step: [real; fake]
            real_noise.append(x[:n])
            fake_noise.append(x[n:] - fake)
        else:
            fake_noise.append(x - fake)
    assert len(real_noise) == 2
    for noise in (torch.cat(real_noise), torch.cat(fake_noise)):
        assert noise.std().item() == pytest.approx(0.5, rel=0.1)
        assert abs(noise.mean().item()) < 0.05


def test_sampler_is_deterministic_conditioned_and_batched(straight):
    _, out, _, _ = straight
    sampler = GanSampler.load(out / "gen.pt")
    labels = np.array([[0.8, 0.8], [-0.8, -0.8], [0.0, 0.5]], np.float32)
    a, b = sampler(labels, seed=5), sampler(labels, seed=5)
    assert a.shape == (3, 1, 32, 64) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.allclose(a, sampler(labels, seed=6))
    same_z_other_labels = sampler(np.array([[0.8, 0.8], [0.8, 0.8], [0.0, 0.5]], np.float32), seed=5)
    assert np.array_equal(same_z_other_labels[0], a[0]) and np.array_equal(same_z_other_labels[2], a[2])
    assert not np.allclose(same_z_other_labels[1], a[1])
    sampler.batch_size = 2  # internal batching does not change the windows
    np.testing.assert_allclose(sampler(labels, seed=5), a, rtol=1e-5, atol=1e-5)
    assert sampler(np.zeros((0, 2), np.float32), seed=0).shape == (0, 1, 32, 64)


def test_finished_gan_is_reused_and_other_settings_refused(straight, train):
    result, out, _, _ = straight
    before = (out / "gen.pt").stat().st_mtime_ns
    again = fit_gan(train, gan_config(), out, progress=False)
    assert (out / "gen.pt").stat().st_mtime_ns == before
    assert again.history == result.history and again.generator_path == out / "gen.pt"
    with pytest.raises(TrainingError, match=r"lr 0\.0002 -> 0\.001"):
        fit_gan(train, gan_config(gan_lr=1e-3), out, progress=False)


def test_nan_stops_with_the_last_good_checkpoint_and_resume_equals_uninterrupted(straight, train, tmp_path):
    """Epoch 3's data turns to NaN: a TrainingError names epoch 3 and last.pt holds epoch 2;
    training again (clean data) resumes at epoch 3 and ends with the uninterrupted run's weights."""
    result, out, _, _ = straight
    poisoned = make_windows()
    real_batch = poisoned.batch
    epochs_done = []
    real_plot = gan_mod.plot_gan_curves

    def plot(history, path):
        epochs_done.append(len(history))
        real_plot(history, path)

    def batch(idx):
        x = real_batch(idx)
        return np.full_like(x, np.nan) if epochs_done and epochs_done[-1] >= 2 else x

    poisoned.batch = batch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gan_mod, "plot_gan_curves", plot)
        with pytest.raises(TrainingError, match="epoch 3") as err:
            fit_gan(poisoned, gan_config(), tmp_path, progress=False)
    assert "\n" not in str(err.value) and "last.pt" in str(err.value)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 2
    assert not (tmp_path / "gen.pt").exists()

    resumed = fit_gan(train, gan_config(), tmp_path, progress=False)
    a = torch.load(out / "gen.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "gen.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)

    assert len(resumed.history) == len(result.history)
    for r, s in zip(resumed.history, result.history, strict=True):
        assert r.keys() == s.keys()
        assert {k: v for k, v in r.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in s.items() if k != "seconds"}, rel=1e-5, abs=1e-6
        )
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == EPOCHS


# ----------------------------------------------------------------------------- health and diversity
HEALTHY = [
    {"D_real": 0.85, "D_fake": 0.2, "D_loss": 0.55, "G_loss": 1.2},
    {"D_real": 0.8, "D_fake": 0.35, "D_loss": 0.6, "G_loss": 0.9},
    {"D_real": 0.78, "D_fake": 0.42, "D_loss": 0.62, "G_loss": 0.8},
    {"D_real": 0.75, "D_fake": 0.45, "D_loss": 0.65, "G_loss": 0.75},
    {"D_real": 0.76, "D_fake": 0.46, "D_loss": 0.66, "G_loss": 0.74},
    {"D_real": 0.75, "D_fake": 0.47, "D_loss": 0.67, "G_loss": 0.73},
]


def test_health_check_passes_a_healthy_run():
    report = health_check(HEALTHY, 0.9)
    assert report["ok"], report["messages"]
    assert not report["discriminator_collapse"] and not report["mode_collapse"]
    assert not any(m.startswith("WARNING") for m in report["messages"])


def test_health_check_flags_discriminator_collapse():
    collapsed = [*HEALTHY[:4], *[{"D_real": 0.99, "D_fake": 0.01, "D_loss": 0.01, "G_loss": 5.0}] * 2]
    report = health_check(collapsed, 0.9)
    assert not report["ok"] and report["discriminator_collapse"]
    assert any("discriminator collapse" in m for m in report["messages"])
    assert any("D_real" in m and m.startswith("WARNING") for m in report["messages"])
    # with label smoothing D_loss cannot go below ~0.325: sitting at that floor is collapse too
    floor = [*HEALTHY[:5], {"D_real": 0.9, "D_fake": 0.1, "D_loss": 0.34, "G_loss": 2.0}]
    assert health_check(floor, 0.9)["discriminator_collapse"]
    assert not health_check(floor, 0.9, real_label=1.0, fake_label=0.0)["discriminator_collapse"]


def test_health_check_flags_mode_collapse_and_out_of_range_outputs():
    report = health_check(HEALTHY, 0.1)
    assert not report["ok"] and report["mode_collapse"]
    assert any("mode collapse" in m for m in report["messages"])
    weak_d = [*HEALTHY[:5], {"D_real": 0.52, "D_fake": 0.5, "D_loss": 0.69, "G_loss": 0.7}]
    report = health_check(weak_d, 0.9)
    assert not report["ok"] and report["discriminator_confused"]
    assert any("discriminator confused" in m for m in report["messages"])
    assert not health_check([*HEALTHY[:5], {**HEALTHY[-1], "D_fake": 0.1}], 0.9)["ok"]


def test_diversity():
    assert diversity(np.ones((5, 1, 4, 4))) == 0.0
    assert diversity(np.stack([np.zeros((1, 4, 4)), np.ones((1, 4, 4))])) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 1, 8, 8))
    assert diversity(x) == pytest.approx(math.sqrt(2), rel=0.05)  # iid N(0, 1): E|a-b|^2 = 2 per element
    assert diversity(x[:1]) == 0.0


# ----------------------------------------------------------------------------- nets v2
nn = torch.nn


def test_nets_field_is_neutral_round_trips_and_selects_the_nets():
    from edgeemo.config import ADDED_FIELDS, RunConfig
    from edgeemo.recipes import recipe_config

    assert ADDED_FIELDS["gan.nets"] == "v1" == RunConfig().gan.nets
    tiny = recipe_config("tiny")
    v2 = tiny.replace({"gan.nets": "v2"})
    assert RunConfig.from_dict(v2.to_dict()) == v2 and v2.gan.nets == "v2"
    assert v2.digest() != tiny.digest()
    old = tiny.to_dict()
    del old["gan"]["nets"]  # a config recorded before the field existed reads as v1
    assert RunConfig.from_dict(old) == tiny
    with pytest.raises(EdgeemoError, match="nets"):
        tiny.replace({"gan.nets": "v4"})
    g, d, _, _ = gan_nets(gan_config(gan_nets="v2"))
    assert type(g) is gan_mod.GeneratorV2 and type(d) is gan_mod.DiscriminatorV2
    g, d, _, _ = gan_nets(gan_config())
    assert type(g) is Generator and type(d) is Discriminator


def test_v1_nets_are_unchanged():
    """v1 keeps its layers and parameter counts exactly (a recipe's GAN stays the GAN it names)."""
    g, d = Generator((64, 128), 64), Discriminator((64, 128))
    assert (count_parameters(g), count_parameters(d)) == (242185, 44281)
    assert not any(isinstance(m, nn.Upsample) for m in g.modules())
    assert not any(n.endswith("original") for n, _ in d.named_parameters())  # no spectral norm


def assert_fits_three_window_sizes(gen_cls, disc_cls):
    """G makes (1, n_mels, n_frames) windows and D one logit each, at the tiny, main-job and base sizes."""
    for shape in ((32, 64), (64, 128), (128, 256)):
        g, d = gen_cls(shape, 16).eval(), disc_cls(shape).eval()
        with torch.no_grad():
            x = g(torch.randn(3, 16), torch.zeros(3, 2))
            assert x.shape == (3, 1, *shape)
            assert d(x, torch.zeros(3, 2)).shape == (3,)


def test_v2_nets_shapes_spectral_norm_and_no_transposed_convs():
    assert_fits_three_window_sizes(gan_mod.GeneratorV2, gan_mod.DiscriminatorV2)
    g, d = gan_mod.GeneratorV2((64, 128), 64), gan_mod.DiscriminatorV2((64, 128))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert sum(isinstance(m, nn.Upsample) for m in g.modules()) == 4
    weighted = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 7 and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in weighted)
    assert count_parameters(d) > 5 * count_parameters(Discriminator((64, 128)))
    assert count_parameters(g) <= 1_000_000 and count_parameters(d) <= 1_000_000
    # spectral norm: every weight's largest singular value is ~1 after a few power iterations in training mode
    d.train()
    for _ in range(30):
        d(torch.randn(4, 1, 64, 128), torch.zeros(4, 2))
    for m in weighted:
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(w, 2).item() == pytest.approx(1.0, rel=0.05)
    with pytest.raises(TrainingError, match="divisible by 16"):
        gan_mod.DiscriminatorV2((40, 64))


def test_minibatch_std_against_a_hand_computation():
    torch.manual_seed(0)
    h = torch.randn(8, 3, 2, 5)
    out = gan_mod.minibatch_std(h, group=4)
    assert out.shape == (8, 4, 2, 5) and torch.equal(out[:, :3], h)
    for i in range(8):  # groups of 4 windows taken with stride 2: {0, 2, 4, 6} and {1, 3, 5, 7}
        members = h[i % 2 :: 2]
        expect = torch.sqrt(members.var(0, unbiased=False) + 1e-8).mean()
        assert torch.allclose(out[i, 3], torch.full((2, 5), expect.item()), atol=1e-6)
    assert torch.equal(gan_mod.minibatch_std(h[:1])[:, 3], torch.zeros(1, 2, 5))  # a batch of one
    assert gan_mod.minibatch_std(h[:6], group=4).shape == (6, 4, 2, 5)  # 6 windows: groups of 3
    same = h[:1].repeat(4, 1, 1, 1)  # identical windows (mode collapse) have a ~0 statistic
    assert gan_mod.minibatch_std(same)[:, 3].max().item() < 1e-3


def test_mel_position_channel_and_d_sees_frequency():
    x = torch.zeros(2, 1, 32, 64)
    pos = gan_mod.mel_position(x)
    assert pos.shape == x.shape
    assert pos[0, 0, 0, 0].item() == -1.0 and pos[1, 0, -1, 7].item() == 1.0
    assert torch.equal(pos[:, :, :, 0], pos[:, :, :, 9])  # constant over time


def test_v2_scores_real_and_fake_in_separate_calls(monkeypatch):
    """With minibatch-std, a joint real+fake batch would let generated windows share statistics with real ones."""
    d = gan_mod.DiscriminatorV2((32, 64))
    sizes = []
    real_forward = d.forward
    monkeypatch.setattr(d, "forward", lambda x, y: (sizes.append(len(x)), real_forward(x, y))[1])
    real, fake, y = torch.randn(4, 1, 32, 64), torch.randn(4, 1, 32, 64), torch.zeros(4, 2)
    out = gan_mod.score(d, real, fake, y)
    assert sizes == [4, 4] and out.shape == (8,)
    with torch.no_grad():
        d.eval()
        assert torch.allclose(gan_mod.score(d, real, fake, y)[:4], d(real, y), atol=1e-6)
    d1 = Discriminator((32, 64))
    assert torch.allclose(gan_mod.score(d1, real, fake, y), d1(torch.cat([real, fake]), torch.cat([y, y])))


def test_v2_run_trains_samples_and_reloads(train, tmp_path):
    cfg = gan_config(gan_nets="v2", gan_epochs=2)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        result = fit_gan(train, cfg, tmp_path, progress=False)
    assert "nets v2" in err.getvalue()
    assert len(result.history) == 2
    sampler = GanSampler.load(result.generator_path)
    assert type(sampler.g) is gan_mod.GeneratorV2
    x = sampler(np.array([[0.5, 0.5], [-0.5, 0.5]], np.float32), seed=3)
    assert x.shape == (2, 1, 32, 64) and np.isfinite(x).all()
    assert np.array_equal(x, sampler(np.array([[0.5, 0.5], [-0.5, 0.5]], np.float32), seed=3))
    with pytest.raises(TrainingError, match="other GAN settings"):  # v1 settings refuse a v2 run's files
        fit_gan(train, gan_config(gan_epochs=2), tmp_path, progress=False)


# ----------------------------------------------------------------------------- nets v3
def test_v3_nets_shapes_statistics_readout_and_a_narrow_generator():
    assert_fits_three_window_sizes(gan_mod.GeneratorV3, gan_mod.DiscriminatorV3)
    g, d = gan_mod.GeneratorV3((64, 128), 64), gan_mod.DiscriminatorV3((64, 128))
    assert isinstance(g, gan_mod.GeneratorV2) and g.width == gan_mod.G3_WIDTH < gan_mod.G2_WIDTH
    assert count_parameters(g) < count_parameters(gan_mod.GeneratorV2((64, 128), 64))
    g3, d3, _, _ = gan_nets(gan_config(gan_nets="v3", features=FeatureConfig()))
    assert type(g3) is gan_mod.GeneratorV3 and type(d3) is gan_mod.DiscriminatorV3
    # features: per stage, each channel's mean and std over (freq, time), layer-normalised
    x = torch.randn(5, 1, 64, 128)
    with torch.no_grad():
        p = d.features(x)
        h, stats = torch.cat([x, gan_mod.mel_position(x)], 1), []
        for conv in d.stages:
            h = torch.nn.functional.leaky_relu(conv(h), 0.2)
            stats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        raw = torch.cat(stats, 1)
    dim = 2 * sum(gan_mod.D3_WIDTHS)
    assert p.shape == (5, dim)
    expect = (raw - raw.mean(1, keepdim=True)) / torch.sqrt(raw.var(1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(p, expect, atol=1e-4)
    # He-normal convolutions with zero bias, no spectral norm; every weight is trained
    w0 = d.stages[0].weight
    assert w0.std().item() == pytest.approx(math.sqrt(2.0 / (2 * 9)), rel=0.15)
    assert all(torch.equal(c.bias, torch.zeros_like(c.bias)) for c in d.stages)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in d.modules())
    assert all(p.requires_grad for p in d.parameters())
    assert count_parameters(d) == sum(c.weight.numel() + c.bias.numel() for c in d.stages) + 4 * dim + 1


def test_v3_d_separates_an_untrained_generator_under_the_recipe_handicaps():
    """With D's LR at 0.5 x 2e-4, targets 0.9/0.1 and instance noise 0.1, v3's D tells real windows from the
    untrained G's within 200 steps (on songs it never trained on): it can see, and it learns fast."""
    torch.manual_seed(0)
    train, held = make_windows(12, seed=1), make_windows(6, seed=2)
    g = gan_mod.GeneratorV3(FEATURES.shape, 8).eval()
    with torch.no_grad():  # level-matched, as train_gan starts G
        g.out.bias.fill_(float(train.batch(np.arange(len(train))).mean()))
    d = gan_mod.DiscriminatorV3(FEATURES.shape)
    opt = torch.optim.Adam(d.parameters(), lr=1e-4, betas=gan_mod.ADAM_BETAS)
    cfg = gan_config().gan
    rng = np.random.default_rng(0)

    def fake_for(y):
        with torch.no_grad():
            return g(torch.randn(len(y), 8), y)

    for _ in range(200):
        b = rng.choice(len(train), 8, replace=False)
        real = torch.from_numpy(train.batch(b))
        y = torch.from_numpy(train.targets[b])
        both = torch.cat([real, fake_for(y)])
        both = both + 0.1 * torch.randn_like(both)
        out = gan_mod.score(d, both[:8], both[8:], y)
        targets = torch.cat([smoothed_targets(8, True, cfg), smoothed_targets(8, False, cfg)])
        optimizer_step(torch.nn.functional.binary_cross_entropy_with_logits(out, targets), d, opt)
    real = torch.from_numpy(held.batch(np.arange(len(held))))
    y = torch.from_numpy(held.targets)
    with torch.no_grad():
        p_real, p_fake = torch.sigmoid(d(real, y)), torch.sigmoid(d(fake_for(y), y))
    assert p_real.mean() > 0.7 and p_fake.mean() < 0.3
    assert (p_real.min() > p_fake.max()).item()


def test_v3_run_trains_samples_and_reloads(train, tmp_path):
    cfg = gan_config(gan_nets="v3", gan_epochs=2)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        result = fit_gan(train, cfg, tmp_path, progress=False)
    assert "nets v3" in err.getvalue()
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["D_loss"])
    sampler = GanSampler.load(result.generator_path)
    assert type(sampler.g) is gan_mod.GeneratorV3 and sampler.g.width == gan_mod.G3_WIDTH
    x = sampler(np.array([[0.5, 0.5], [-0.5, 0.5]], np.float32), seed=3)
    assert x.shape == (2, 1, 32, 64) and np.isfinite(x).all()
    with pytest.raises(TrainingError, match="other GAN settings"):  # v2 settings refuse a v3 run's files
        fit_gan(train, gan_config(gan_nets="v2", gan_epochs=2), tmp_path, progress=False)


# ----------------------------------------------------------------------------- sample quality
def test_frechet_distance_against_hand_computations():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, (200, 1)), rng.normal(2.0, 3.0, (300, 1))
    ma, mb, sa, sb = a.mean(), b.mean(), a.std(ddof=1), b.std(ddof=1)
    assert gan_mod.frechet_distance(a, b) == pytest.approx((ma - mb) ** 2 + (sa - sb) ** 2, rel=1e-9)
    # independent dimensions (diagonal covariances): the 1-D distances add up
    a2 = np.stack([rng.normal(0, 1, 5000), rng.normal(1, 2, 5000)], 1)
    b2 = np.stack([rng.normal(1, 1, 5000), rng.normal(1, 0.5, 5000)], 1)
    assert gan_mod.frechet_distance(a2, b2) == pytest.approx(1.0 + 1.5**2, abs=0.1)
    # a scaled, shifted copy: C_b = 4 C_a -> FD = |mu_a - mu_b|^2 + tr(C_a) + 4 tr(C_a) - 2 tr(2 C_a)
    c = rng.normal(0, 1, (400, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 2.0, 0.5], [0.2, 0.0, 0.5]])
    d = 2.0 * c + 1.0
    tr = np.trace(np.cov(c, rowvar=False))
    assert gan_mod.frechet_distance(c, d) == pytest.approx(((c.mean(0) - d.mean(0)) ** 2).sum() + tr, rel=1e-6)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # invariant under a rotation of both feature sets
    e = rng.normal(0, 1, (300, 3)) * [0.5, 1.0, 3.0]
    assert gan_mod.frechet_distance(c @ q, e @ q) == pytest.approx(gan_mod.frechet_distance(c, e), rel=1e-6)
    assert gan_mod.frechet_distance(a2, a2) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(TrainingError, match="two"):
        gan_mod.frechet_distance(a[:1], b)
    with pytest.raises(TrainingError, match="two"):
        gan_mod.frechet_distance(a2, b)


def test_frozen_embedding_is_fixed_and_tells_structure_from_noise():
    x = make_windows(n_songs=6).batch(np.arange(16))
    f1 = gan_mod.embed_windows(x, float(x.mean()), float(x.std()))
    gan_mod.frozen_embedding.cache_clear()  # a rebuilt embedding has the same weights
    f2 = gan_mod.embed_windows(x, float(x.mean()), float(x.std()))
    assert f1.shape == (16, gan_mod.EMBED_WIDTH) and np.array_equal(f1, f2)
    assert not any(p.requires_grad for p in gan_mod.frozen_embedding().parameters())
    real = make_windows(n_songs=20, seed=1).batch(np.arange(64))
    other = make_windows(n_songs=20, seed=2).batch(np.arange(64))
    noise = np.random.default_rng(0).normal(real.mean(), real.std(), real.shape).astype(np.float32)
    c, s = float(real.mean()), float(real.std())
    e_real = gan_mod.embed_windows(real, c, s)
    same = gan_mod.frechet_distance(e_real, gan_mod.embed_windows(other, c, s))
    far = gan_mod.frechet_distance(e_real, gan_mod.embed_windows(noise, c, s))
    assert far > 5 * same


def test_condition_scores_count_windows_in_their_quadrant():
    def sampler(labels, seed):  # a "generator" whose windows are their labels; the scorer reads them back
        return np.asarray(labels, np.float32).reshape(-1, 1, 1, 2)

    flip = {"n": 0}

    def scorer(x):  # reads the label, but flips valence of every 4th window
        out = x.reshape(len(x), 2).astype(np.float64).copy()
        out[::4, 0] *= -1
        flip["n"] += 1
        return out

    rows = gan_mod.condition_scores(sampler, scorer, per_condition=8)
    assert flip["n"] == len(gan_mod.SAMPLE_CONDITIONS)
    assert rows[0]["condition"] == [0.7, 0.7] and rows[0]["in_quadrant"] == pytest.approx(0.75)
    assert rows[0]["mean_score"] == pytest.approx([0.7 * 0.5, 0.7])
    assert "in_quadrant" not in rows[-1]  # the centre is no quadrant


def test_train_on_generated_test_on_real_rewards_windows_that_carry_their_labels():
    data = make_windows(n_songs=80, seed=5)  # 320 windows: a reference sample and a disjoint held-out one
    ref = gan_mod.quality_reference(data, 0)
    assert len(ref.real) == gan_mod.QUALITY_WINDOWS and len(ref.held) == gan_mod.QUALITY_WINDOWS
    assert ref.fd_floor is not None and ref.trtr is not None and ref.trtr > 0.5  # the frames encode the labels
    by_label = {tuple(np.round(t, 6)): i for i, t in enumerate(data.targets)}

    def faithful(labels, seed):  # "generates" a real window of a song with that label
        return data.batch(np.array([by_label[tuple(np.round(t, 6))] for t in labels]))

    def blind(labels, seed):  # real-looking windows of random songs: the condition is ignored
        return data.batch(np.random.default_rng(seed).choice(len(data), len(labels)))

    good = gan_mod.tstr_score(faithful, ref, 0)
    bad = gan_mod.tstr_score(blind, ref, 0)
    assert ref.trtr - 0.15 < good <= ref.trtr + 0.05  # as good as real windows, up to which windows were drawn
    assert abs(bad) < 0.2
    x = np.random.default_rng(1).standard_normal((50, 4))
    y = np.stack([x[:, 0] - x[:, 1], 2 * x[:, 2]], 1)
    assert gan_mod.probe_ccc(x[:40], y[:40], x[40:], y[40:]) > 0.98  # a linear map is recovered


def test_quality_is_logged_per_epoch_and_in_health(straight, train, tmp_path):
    result, out, _, err = straight
    assert all(h["FD"] > 0 and math.isfinite(h["FD"]) for h in result.history)
    health = json.loads((out / "health.json").read_text())
    q = health["quality"]
    assert q["fd"] > 0 and "conditions" not in q
    assert q["fd_real_floor"] is None  # 20 windows: no two disjoint real samples to compare
    assert "sample FD" in err
    sampler = GanSampler.load(result.generator_path)
    ref = gan_mod.quality_reference(train, 0)
    assert gan_mod.sample_fd(sampler, ref.real, ref.labels, 0) == pytest.approx(q["fd"], rel=1e-6)
    assert q["tstr_ccc"] is None and q["trtr_ccc"] is None  # no held-out real sample to test on
    assert all("TSTR" not in h for h in result.history)
    seen = []
    res = fit_gan(
        train,
        gan_config(gan_epochs=1),
        tmp_path,
        progress=False,
        scorer=lambda x: (seen.append(len(x)), np.tile([0.5, -0.5], (len(x), 1)))[1],
    )
    rows = res.health["quality"]["conditions"]
    assert seen == [64] * 5 and rows[3]["condition"] == [0.7, -0.7] and rows[3]["in_quadrant"] == 1.0
    assert rows[0]["in_quadrant"] == 0.0


def test_v2_discriminator_wins_outright_without_the_recipe_handicaps():
    """Unsmoothed targets, no noise, D alone against a fixed (freshly initialised, mean-matched) generator:
    the v2 discriminator must separate real from generated windows of held-out songs almost perfectly."""
    torch.manual_seed(0)
    data = make_windows(n_songs=24, seed=3)
    train_idx, test_idx = np.flatnonzero(data.index[:, 0] < 16), np.flatnonzero(data.index[:, 0] >= 16)
    g = gan_mod.GeneratorV2(FEATURES.shape, 8)
    with torch.no_grad():
        g.out.bias.fill_(float(data.batch(train_idx).mean()))
    sampler = GanSampler(g)
    d = gan_mod.DiscriminatorV2(FEATURES.shape)
    opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=gan_mod.ADAM_BETAS)
    rng = np.random.default_rng(0)
    for step in range(80):
        b = rng.choice(train_idx, 16, replace=False)
        y = torch.from_numpy(data.targets[b])
        out = gan_mod.score(d, torch.from_numpy(data.batch(b)), torch.from_numpy(sampler(data.targets[b], step)), y)
        loss = nn.functional.binary_cross_entropy_with_logits(out, torch.cat([torch.ones(16), torch.zeros(16)]))
        optimizer_step(loss, d, opt)
    d.eval()
    with torch.no_grad():
        y = torch.from_numpy(data.targets[test_idx])
        d_real = torch.sigmoid(d(torch.from_numpy(data.batch(test_idx)), y)).mean().item()
        d_fake = torch.sigmoid(d(torch.from_numpy(sampler(data.targets[test_idx], 999)), y)).mean().item()
    assert d_real > 0.9 and d_fake < 0.1
