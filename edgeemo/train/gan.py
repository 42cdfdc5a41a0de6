"""Conditional spectrogram GAN for augmentation, trained with the stabilised recipe.

Owns the generator G(z, valence, arousal) -> log-mel window, the projection
discriminator D(x, valence, arousal), and the training recipe, each rule a named
piece of code driven by a :class:`edgeemo.presets.TrainConfig` field:

- discriminator LR = ``gan_d_lr_mult`` (0.5) x generator LR;
- label smoothing: D's targets are ``gan_real_label`` (0.9) / ``gan_fake_label`` (0.1);
- instance noise on real and fake inputs of D, std ``max(gan_noise_std * (1 - epoch/epochs), gan_noise_min)``;
- D updated every ``gan_d_every``-th iteration (default every other), G ``gan_g_steps`` (2) times per iteration;
- gradient-norm clipping at 1.0 on both;
- per-epoch D_loss, G_loss, D_real, D_fake to ``metrics.jsonl``/``curves.png``, a health check
  (``health.json``) with discriminator- and mode-collapse warnings, and ``samples.png``.

Resumable from ``last.pt`` (RNG re-seeded per epoch); the finished generator is
``gen.pt``, which :class:`GanSampler` loads to feed the teacher.
"""

from __future__ import annotations

import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeemo.data.windows import WindowSet
from edgeemo.errors import TrainingError
from edgeemo.presets import TrainConfig
from edgeemo.train.checkpoint import atomic_write_bytes, atomic_write_json, load_checkpoint, save_checkpoint
from edgeemo.train.checkpoint import write_metrics_jsonl
from edgeemo.train.loop import resolve_device, seed_everything
from edgeemo.train.rundata import epoch_window_indices

CLIP_NORM = 1.0
_BASE = 16  # both nets change resolution by 16 (4 stride-2 / upsampling stages)


# ----------------------------------------------------------------------------- recipe rules
def noise_std(epoch: int, epochs: int, initial: float, minimum: float) -> float:
    """Instance-noise std for a 0-based ``epoch``: linear decay from ``initial``, floored at ``minimum``."""
    return max(initial * (1.0 - epoch / max(epochs, 1)), minimum)


def d_step_due(iteration: int, d_every: int) -> bool:
    """Whether the discriminator is updated at this 0-based iteration."""
    return iteration % d_every == 0


def smoothed_targets(batch: int, real: bool, cfg: TrainConfig) -> torch.Tensor:
    """Label-smoothed discriminator targets: ``gan_real_label`` for real, ``gan_fake_label`` for fake."""
    return torch.full((batch,), cfg.gan_real_label if real else cfg.gan_fake_label)


def clip_gradients(module: nn.Module, max_norm: float = CLIP_NORM) -> float:
    """Clip the module's gradient norm; returns the norm before clipping."""
    return float(torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm))


# ----------------------------------------------------------------------------- networks
class Generator(nn.Module):
    """z (latent) + (valence, arousal) -> one log-mel window (1, n_mels, n_frames)."""

    def __init__(self, shape: tuple[int, int], latent_dim: int = 64, width: int = 128) -> None:
        super().__init__()
        m, f = shape
        if m % _BASE or f % _BASE:
            raise TrainingError(f"GAN needs n_mels and n_frames divisible by {_BASE}, got {m} x {f}")
        self.shape, self.latent_dim, self.width = (m, f), latent_dim, width
        self.label = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(latent_dim + 32, width * (m // _BASE) * (f // _BASE))
        chans = [width, width // 2, width // 4, width // 8, width // 8]
        blocks: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            blocks += [nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout)]
            blocks.append(nn.LeakyReLU(0.2))
        self.up = nn.Sequential(*blocks)
        self.out = nn.Conv2d(chans[-1], 1, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.label(labels)], 1))
        h = h.view(z.shape[0], self.width, self.shape[0] // _BASE, self.shape[1] // _BASE)
        return self.out(self.up(h))


class Discriminator(nn.Module):
    """Projection discriminator: conv features, logit = linear(features) + <embed(labels), features>."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        chans = [1, width // 4, width // 2, width, width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(width, 1)
        self.embed = nn.Linear(2, width)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(labels) * h).sum(1) / math.sqrt(h.shape[1])


# ----------------------------------------------------------------------------- measurements
def diversity(x: np.ndarray, max_items: int = 128, seed: int = 0) -> float:
    """Mean pairwise L2 distance between windows, per sqrt(element): 0 for identical windows."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(x) > max_items:
        x = x[np.random.default_rng(seed).choice(len(x), max_items, replace=False)]
    if len(x) < 2:
        return 0.0
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    iu = np.triu_indices(len(x), 1)
    return float(np.sqrt(d2[iu]).mean() / math.sqrt(x.shape[1]))


def health_check(history: list[dict[str, Any]], diversity_ratio: float) -> dict[str, Any]:
    """Judge the run against the stabilised recipe's expected ranges; warnings, not errors."""
    last_third = history[-max(1, len(history) // 3) :]
    d_real = float(np.mean([h["D_real"] for h in last_third]))
    end = history[-1]
    msgs, ok = [], True

    def check(cond: bool, good: str, bad: str) -> None:
        nonlocal ok
        msgs.append(good if cond else bad)
        ok = ok and cond

    check(0.6 <= d_real <= 0.95, f"D_real {d_real:.2f} within ~0.7-0.9", f"D_real {d_real:.2f} outside ~0.7-0.9")
    check(
        0.25 <= end["D_fake"] <= 0.65,
        f"D_fake rose to {end['D_fake']:.2f} (~0.4-0.5 expected)",
        f"D_fake ended at {end['D_fake']:.2f}, not ~0.4-0.5",
    )
    for k in ("D_loss", "G_loss"):
        check(
            0.2 <= end[k] <= 1.0,
            f"{k} ended at {end[k]:.2f} (~0.3-0.8)",
            f"{k} ended at {end[k]:.2f}, outside ~0.3-0.8",
        )
    if end["D_loss"] < 0.05:
        ok = False
        msgs.append(f"WARNING discriminator collapse: D_loss {end['D_loss']:.3f} -> 0")
    if diversity_ratio < 0.3:
        ok = False
        msgs.append(f"WARNING mode collapse: generated diversity is {diversity_ratio:.2f} of the real windows'")
    else:
        msgs.append(f"diversity of generated windows {diversity_ratio:.2f} x real")
    return {"ok": ok, "messages": msgs, "d_real_last_third": d_real, "diversity_ratio": diversity_ratio}


# ----------------------------------------------------------------------------- training
@dataclass
class GanResult:
    history: list[dict[str, Any]]
    health: dict[str, Any]
    diversity_ratio: float
    generator_path: Path


def _recipe(cfg: TrainConfig) -> dict[str, Any]:
    keys = [k for k in cfg.to_dict() if k.startswith("gan_") and k != "gan_ratio"]
    return {k: cfg.to_dict()[k] for k in keys} | {"features": cfg.features.to_dict(), "seed": cfg.seed}


def build_gan(cfg: TrainConfig) -> tuple[Generator, Discriminator, torch.optim.Optimizer, torch.optim.Optimizer]:
    """Networks and optimisers; D's LR is ``gan_d_lr_mult`` x G's."""
    g = Generator(cfg.features.shape, cfg.gan_latent_dim)
    d = Discriminator()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.gan_lr * cfg.gan_d_lr_mult, betas=(0.5, 0.999))
    return g, d, opt_g, opt_d


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for k in ("D_loss", "G_loss"):
        axes[0].plot(ep, [h[k] for h in history], marker=".", label=k)
    for k in ("D_real", "D_fake"):
        axes[1].plot(ep, [h[k] for h in history], marker=".", label=k)
    axes[1].axhspan(0.7, 0.9, color="tab:blue", alpha=0.08)
    axes[1].axhspan(0.4, 0.5, color="tab:orange", alpha=0.08)
    for ax, title in zip(axes, ("losses", "mean D outputs (shaded: healthy ranges)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


CONDITIONS = ((0.7, 0.7), (-0.7, 0.7), (-0.7, -0.7), (0.7, -0.7), (0.0, 0.0))


def _plot_samples(sampler: GanSampler, train: WindowSet, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array(CONDITIONS, dtype=np.float32)
    fake = sampler(np.repeat(labels, 2, axis=0), seed=0)
    fig, axes = plt.subplots(3, len(CONDITIONS), figsize=(3 * len(CONDITIONS), 6.5))
    for j, (v, a) in enumerate(CONDITIONS):
        nearest = int(np.argmin(((train.targets - [v, a]) ** 2).sum(1)))
        panels = [(train.window(nearest), f"real v{train.targets[nearest][0]:+.1f} a{train.targets[nearest][1]:+.1f}")]
        panels += [(fake[2 * j + r, 0], f"generated v{v:+.1f} a{a:+.1f}") for r in range(2)]
        for i, (img, title) in enumerate(panels):
            axes[i, j].imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=-2.5, vmax=3)
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def train_gan(train: WindowSet, cfg: TrainConfig, out_dir: Path, progress: bool = True) -> GanResult:
    """Train (or resume, or reuse) the conditional GAN on the training windows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen_path, last_path = out_dir / "gen.pt", out_dir / "last.pt"
    recipe = _recipe(cfg)
    if gen_path.is_file():
        ck = load_checkpoint(gen_path)
        if ck.get("recipe") == recipe:
            health = ck["health"]
            return GanResult(ck["history"], health, health["diversity_ratio"], gen_path)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    g, d, opt_g, opt_d = build_gan(cfg)
    g.to(device)
    d.to(device)
    history: list[dict[str, Any]] = []
    start = 0
    if last_path.is_file():
        ck = load_checkpoint(last_path)
        if ck.get("recipe") != recipe:
            raise TrainingError(f"{last_path} was trained with other GAN settings; use --restart")
        g.load_state_dict(ck["state_dict"])
        d.load_state_dict(ck["discriminator"])
        opt_g.load_state_dict(ck["optimizer"])
        opt_d.load_state_dict(ck["optimizer_d"])
        history, start = ck["history"], ck["epoch"]
        print(f"[gan] resuming from {last_path} at epoch {start + 1}/{cfg.gan_epochs}", file=sys.stderr)
    bce = nn.BCEWithLogitsLoss()
    for epoch in range(start, cfg.gan_epochs):
        t0 = time.perf_counter()
        seed_everything(cfg.seed * 100_003 + 50_000 + epoch)
        sigma = noise_std(epoch, cfg.gan_epochs, cfg.gan_noise_std, cfg.gan_noise_min)
        idx = epoch_window_indices(train, cfg.train_windows_per_song, cfg.seed, 10_000 + epoch)
        idx = idx[torch.randperm(len(idx)).numpy()]
        sums = {"D_loss": 0.0, "G_loss": 0.0, "D_real": 0.0, "D_fake": 0.0}
        d_steps = g_steps = 0
        g.train()
        d.train()
        n_iter = math.ceil(len(idx) / cfg.gan_batch_size)
        for it in range(n_iter):
            b = idx[it * cfg.gan_batch_size : (it + 1) * cfg.gan_batch_size]
            real = torch.from_numpy(train.batch(b)).to(device)
            y = torch.from_numpy(train.targets[b]).to(device)
            n = real.shape[0]
            if d_step_due(it, cfg.gan_d_every):
                with torch.no_grad():
                    fake = g(torch.randn(n, cfg.gan_latent_dim, device=device), y)
                out_real = d(real + sigma * torch.randn_like(real), y)
                out_fake = d(fake + sigma * torch.randn_like(fake), y)
                loss_d = bce(out_real, smoothed_targets(n, True, cfg).to(device)) + bce(
                    out_fake, smoothed_targets(n, False, cfg).to(device)
                )
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                clip_gradients(d)
                opt_d.step()
                d_steps += 1
                sums["D_loss"] += loss_d.item()
                sums["D_real"] += torch.sigmoid(out_real).mean().item()
                sums["D_fake"] += torch.sigmoid(out_fake).mean().item()
            for _ in range(cfg.gan_g_steps):
                fake = g(torch.randn(n, cfg.gan_latent_dim, device=device), y)
                out = d(fake + sigma * torch.randn_like(fake), y)
                loss_g = bce(out, torch.ones(n, device=device))
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                clip_gradients(g)
                opt_g.step()
                g_steps += 1
                sums["G_loss"] += loss_g.item()
            if not (math.isfinite(sums["D_loss"]) and math.isfinite(sums["G_loss"])):
                raise TrainingError(
                    f"GAN loss became NaN at epoch {epoch + 1}; the last good checkpoint is "
                    f"{last_path if last_path.exists() else 'none yet'}"
                )
        rec = {
            "epoch": epoch + 1,
            "D_loss": sums["D_loss"] / max(d_steps, 1),
            "G_loss": sums["G_loss"] / max(g_steps, 1),
            "D_real": sums["D_real"] / max(d_steps, 1),
            "D_fake": sums["D_fake"] / max(d_steps, 1),
            "noise_std": sigma,
            "iterations": n_iter,
            "d_steps": d_steps,
            "g_steps": g_steps,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        history.append(rec)
        save_checkpoint(
            last_path,
            {
                "stage": "gan",
                "state_dict": g.state_dict(),
                "discriminator": d.state_dict(),
                "optimizer": opt_g.state_dict(),
                "optimizer_d": opt_d.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "recipe": recipe,
            },
        )
        write_metrics_jsonl(out_dir / "metrics.jsonl", history)
        _plot_curves(history, out_dir / "curves.png")
        print(
            f"[gan] epoch {epoch + 1}/{cfg.gan_epochs} D_loss {rec['D_loss']:.3f} G_loss {rec['G_loss']:.3f} "
            f"D_real {rec['D_real']:.3f} D_fake {rec['D_fake']:.3f} noise {sigma:.3f} "
            f"(D steps {d_steps}, G steps {g_steps}) | {rec['seconds']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    if not history:
        raise TrainingError("GAN: no epochs were run (gan_epochs=0)")
    spec = {"shape": list(cfg.features.shape), "latent_dim": cfg.gan_latent_dim}
    sampler = GanSampler(_load_generator(spec, g.state_dict()), cfg.gan_latent_dim)
    probe = train.targets[np.random.default_rng(cfg.seed).choice(len(train), min(128, len(train)), replace=False)]
    real_div = diversity(
        train.batch(np.random.default_rng(cfg.seed).choice(len(train), min(128, len(train)), replace=False))
    )
    ratio = diversity(sampler(probe, seed=cfg.seed)) / max(real_div, 1e-9)
    health = health_check(history, ratio)
    for msg in health["messages"]:
        print(f"GAN health: {msg}", file=sys.stderr)
    print(f"GAN health: {'OK' if health['ok'] else 'check the warnings above'}", file=sys.stderr)
    atomic_write_json(out_dir / "health.json", health)
    _plot_samples(sampler, train, out_dir / "samples.png")
    save_checkpoint(
        gen_path,
        {
            "stage": "gan",
            "spec": spec,
            "state_dict": g.state_dict(),
            "history": history,
            "health": health,
            "recipe": recipe,
        },
    )
    return GanResult(history, health, ratio, gen_path)


def _load_generator(spec: dict[str, Any], state: dict[str, Any]) -> Generator:
    g = Generator(tuple(spec["shape"]), spec["latent_dim"])
    g.load_state_dict(state)
    return g.eval()


class GanSampler:
    """Generated windows for given labels: ``sampler(labels (k, 2), seed) -> (k, 1, n_mels, n_frames)``."""

    def __init__(self, generator: Generator, latent_dim: int, device: str = "cpu") -> None:
        self.g = generator.to(device).eval()
        self.latent_dim = latent_dim
        self.device = device

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> GanSampler:
        ck = load_checkpoint(path)
        return cls(_load_generator(ck["spec"], ck["state_dict"]), ck["spec"]["latent_dim"], device)

    @torch.no_grad()
    def __call__(self, labels: np.ndarray, seed: int) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 2)
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(len(labels), self.latent_dim, generator=gen)
        out = [
            self.g(z[s : s + 256].to(self.device), torch.from_numpy(labels[s : s + 256]).to(self.device)).cpu()
            for s in range(0, len(labels), 256)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 1, *self.g.shape), np.float32)
