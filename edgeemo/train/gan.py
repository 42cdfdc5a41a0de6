"""Conditional spectrogram GAN for augmentation, trained with the stabilised recipe.

Owns the generator G(z, valence, arousal) -> one log-mel window, the projection
discriminator D(x, valence, arousal) in three versions chosen by ``GanConfig.nets`` (v1: a small
transposed-conv G and a plain 4-conv D; v2: an upsample+conv G and a wider, spectrally
normalised D with a mel-position input channel and minibatch-std; v3: a narrower v2 G and a wide D that reads
out multi-scale feature statistics, which leads under the recipe's schedule on the built-in corpus), the training
loop and its outputs, and
:class:`GanSampler`, which loads the finished generator (``gen.pt``) and feeds
generated windows to the teacher (it matches ``edgeemo.train.teacher.GanSampler``).

The stabilised recipe, each rule a named piece of code driven by a
:class:`edgeemo.config.GanConfig` field (and so by a CLI flag):

- discriminator LR = ``d_lr_mult`` (0.5) x generator LR ``lr``; Adam, betas (0.5, 0.999)
  (:func:`build_gan`);
- label smoothing: D's targets are ``real_label`` (0.9) for real and ``fake_label`` (0.1)
  for generated windows (:func:`smoothed_targets`);
- instance noise on both the real and the generated inputs of D, std
  ``max(noise_std * (1 - epoch/epochs), noise_min)`` with a 0-based epoch (:func:`noise_std`);
- per iteration, one D step when ``iteration % d_every == 0`` (:func:`d_step_due`), then
  ``g_steps`` G steps;
- gradient-norm clipping at 1.0 on both nets (:func:`optimizer_step`).

Per epoch it logs and records D_loss, G_loss, D_real, D_fake (mean D outputs), the noise
std and the D/G step counts (``metrics.jsonl``, ``curves.png``); at the end it measures
the diversity of generated windows against real ones, runs :func:`health_check`
(``health.json``, lines starting ``GAN health:``; a failed check is a warning) and draws
``samples.png``. ``last.pt`` is written atomically after every epoch and randomness is
re-seeded from ``(seed, epoch)``, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeemo import __version__, metrics
from edgeemo.atomic import atomic_write_bytes, atomic_write_json
from edgeemo.config import ADDED_FIELDS, GanConfig, StageContext, to_plain
from edgeemo.data.windows import WindowSet
from edgeemo.errors import TrainingError
from edgeemo.log import log
from edgeemo.progress import progress_iter
from edgeemo.train.checkpoint import load_checkpoint, save_checkpoint, write_metrics_jsonl
from edgeemo.train.loop import resolve_device, seed_everything
from edgeemo.train.rundata import epoch_window_indices

CLIP_NORM = 1.0  # gradient-norm clipping of both nets
ADAM_BETAS = (0.5, 0.999)
_BASE = 16  # both nets change resolution by 16: four stride-2 stages
G_WIDTH = 64  # generator channels at the (n_mels/16, n_frames/16) map; halved at every stage
D_WIDTH = 64  # discriminator channels after its last stage; halved going back towards the input

# Healthy ranges the health check compares a run against ("~" ranges get HEALTH_SLACK either side).
HEALTHY_D_REAL = (0.7, 0.9)  # mean D output on real windows, over the last third of epochs
HEALTHY_D_FAKE_END = (0.3, 0.6)  # mean D output on generated windows at the end (rises to ~0.4-0.5)
HEALTHY_LOSS_END = (0.3, 0.8)  # D_loss and G_loss at the end
HEALTH_SLACK = 0.05
D_COLLAPSE_MARGIN = 0.05  # D_loss this close to its minimum means D wins outright
MODE_COLLAPSE_RATIO = 0.3  # generated / real diversity below this: mode collapse
D_CONFUSED_GAP = 0.05  # D_real - D_fake below this at the end: D tells nothing apart


# ----------------------------------------------------------------------------- recipe rules
def noise_std(epoch: int, epochs: int, initial: float, minimum: float) -> float:
    """Instance-noise std at 0-based ``epoch`` of ``epochs``: linear decay from ``initial``, floored at ``minimum``."""
    return max(initial * (1.0 - epoch / max(epochs, 1)), minimum)


def d_step_due(iteration: int, d_every: int) -> bool:
    """Whether the discriminator takes a step at this 0-based iteration of an epoch."""
    return iteration % d_every == 0


def smoothed_targets(batch: int, real: bool, cfg: GanConfig) -> torch.Tensor:
    """D's label-smoothed targets: ``real_label`` (0.9) for real, ``fake_label`` (0.1) for generated."""
    return torch.full((batch,), float(cfg.real_label if real else cfg.fake_label))


def clip_gradients(module: nn.Module, max_norm: float = CLIP_NORM) -> float:
    """Clip the total gradient norm of ``module`` to ``max_norm``; returns the norm before clipping."""
    params = [p for p in module.parameters() if p.grad is not None]
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0


def optimizer_step(
    loss: torch.Tensor, module: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float = CLIP_NORM
) -> float:
    """One update of ``module``: backward, clip its gradient norm to ``max_norm``, step. Returns the pre-clip norm."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = clip_gradients(module, max_norm)
    optimizer.step()
    return norm


def smoothing_floor(real_label: float, fake_label: float) -> float:
    """The lowest D_loss label smoothing allows: the mean binary entropy of the two targets."""

    def h(p: float) -> float:
        return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log(p) + (1 - p) * math.log(1 - p))

    return 0.5 * (h(real_label) + h(fake_label))


def check_gan_config(cfg: GanConfig, shape: tuple[int, int]) -> None:
    """Raise :class:`TrainingError` (one line) for GAN settings the recipe cannot run with on ``shape`` windows."""
    problems = []
    m, f = shape
    if m % _BASE or f % _BASE:
        problems.append(f"n_mels and n_frames must be divisible by {_BASE}, got {m} x {f}")
    for name in ("epochs", "d_every", "g_steps", "batch_size", "latent_dim"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and cfg.d_lr_mult > 0):
        problems.append(f"gan.lr and gan.d_lr_mult must be positive, got {cfg.lr} and {cfg.d_lr_mult}")
    if not 0.0 <= cfg.fake_label < cfg.real_label <= 1.0:
        problems.append(f"need 0 <= gan.fake_label < gan.real_label <= 1, got {cfg.fake_label}, {cfg.real_label}")
    if cfg.noise_std < 0 or cfg.noise_min < 0:
        problems.append("gan.noise_std and gan.noise_min must not be negative")
    if problems:
        raise TrainingError("GAN settings: " + "; ".join(problems))


# ----------------------------------------------------------------------------- networks
def _checked_shape(shape: tuple[int, int]) -> tuple[int, int]:
    m, f = int(shape[0]), int(shape[1])
    if m % _BASE or f % _BASE or m < _BASE or f < _BASE:
        raise TrainingError(f"GAN needs n_mels and n_frames divisible by {_BASE}, got {m} x {f}")
    return m, f


class Generator(nn.Module):
    """G(z, labels) for ``nets: v1``: latent ``z`` + (valence, arousal) -> one window ``(1, n_mels, n_frames)``.

    The labels go through a small linear embedding and are concatenated with ``z``; a
    linear layer makes a ``(width, n_mels/16, n_frames/16)`` map that four stride-2
    transposed convolutions (BatchNorm + LeakyReLU between them) grow to full size,
    halving the channels each stage. Output is unbounded (log-mel scale).
    """

    nets = "v1"

    def __init__(self, shape: tuple[int, int], latent_dim: int = 64, width: int = G_WIDTH) -> None:
        super().__init__()
        m, f = _checked_shape(shape)
        self.shape, self.latent_dim, self.width = (m, f), latent_dim, width
        self.label = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(latent_dim + 32, width * (m // _BASE) * (f // _BASE))
        chans = [width, width // 2, width // 4, width // 8]
        blocks: list[nn.Module] = [nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        for cin, cout in itertools.pairwise(chans):
            blocks += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        self.up = nn.Sequential(*blocks)
        self.out = nn.ConvTranspose2d(chans[-1], 1, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.label(labels)], 1))
        h = h.view(z.shape[0], self.width, self.shape[0] // _BASE, self.shape[1] // _BASE)
        return self.out(self.up(h))


class Discriminator(nn.Module):
    """D(x, labels) for ``nets: v1`` -> one logit per window (a projection discriminator).

    Four stride-2 convolutions (LeakyReLU) give a ``(width, n_mels/16, n_frames/16)`` map;
    it is averaged over time only (frequency position matters in a spectrogram) and
    flattened to features ``h``. ``logit = linear(h) + <embed(labels), h> / sqrt(dim h)``.
    """

    nets = "v1"
    batch_statistics = False

    def __init__(self, shape: tuple[int, int], width: int = D_WIDTH) -> None:
        super().__init__()
        m, f = _checked_shape(shape)
        self.shape, self.width = (m, f), width
        chans = [1, width // 8, width // 4, width // 2, width]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        dim = width * (m // _BASE)
        self.linear = nn.Linear(dim, 1)
        self.embed = nn.Linear(2, dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=3).flatten(1)
        return self.linear(h).squeeze(1) + (self.embed(labels) * h).sum(1) / math.sqrt(h.shape[1])


G2_WIDTH = 64  # v2 generator channels at the (n_mels/16, n_frames/16) map; halved at every stage down to /8
D2_WIDTH = 128  # v2 discriminator channels after its last stage
MBSTD_GROUP = 4  # minibatch-std group size (the largest divisor of the batch up to this)


def mel_position(x: torch.Tensor) -> torch.Tensor:
    """A channel holding each row's mel-bin position in [-1, 1], shaped like ``x`` (B, 1, n_mels, n_frames)."""
    pos = torch.linspace(-1.0, 1.0, x.shape[2], device=x.device, dtype=x.dtype)
    return pos.view(1, 1, -1, 1).expand(x.shape[0], 1, x.shape[2], x.shape[3])


def minibatch_std(h: torch.Tensor, group: int = MBSTD_GROUP) -> torch.Tensor:
    """``h`` with one channel appended: per group of windows, the mean over features of the std across the group.

    The group is the largest divisor of the batch up to ``group``; a batch of one gets a zero channel. Generated
    windows that all look alike (mode collapse) give a std that real windows do not, which D can see.
    """
    n = h.shape[0]
    g = max(k for k in range(1, min(group, n) + 1) if n % k == 0)
    if g == 1:
        stat = torch.zeros(n, 1, *h.shape[2:], device=h.device, dtype=h.dtype)
    else:
        grouped = h.reshape(g, n // g, *h.shape[1:])  # window i is in group i % (n // g)
        std = torch.sqrt(grouped.var(dim=0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # (n // g,)
        stat = std.view(1, -1, 1, 1, 1).expand(g, -1, 1, *h.shape[2:]).reshape(n, 1, *h.shape[2:])
    return torch.cat([h, stat], 1)


def _sn(module: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module)


class GeneratorV2(nn.Module):
    """G(z, labels) for ``nets: v2``: the v1 conditioning, then four (nearest x2 upsample + 3x3 conv + BatchNorm +
    LeakyReLU) stages, which grow the map without the checkerboard pattern of stride-2 transposed convolutions,
    and a 3x3 output convolution. Channels: ``width`` halving per stage down to ``width / 8`` (kept at full size)."""

    nets = "v2"

    def __init__(self, shape: tuple[int, int], latent_dim: int = 64, width: int = G2_WIDTH) -> None:
        super().__init__()
        m, f = _checked_shape(shape)
        self.shape, self.latent_dim, self.width = (m, f), latent_dim, width
        self.label = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(latent_dim + 32, width * (m // _BASE) * (f // _BASE))
        chans = [width, width // 2, width // 4, width // 8, width // 8]
        blocks: list[nn.Module] = [nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        for cin, cout in itertools.pairwise(chans):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
            ]
        self.up = nn.Sequential(*blocks)
        self.out = nn.Conv2d(chans[-1], 1, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.label(labels)], 1))
        h = h.view(z.shape[0], self.width, self.shape[0] // _BASE, self.shape[1] // _BASE)
        return self.out(self.up(h))


class DiscriminatorV2(nn.Module):
    """D(x, labels) for ``nets: v2``: a projection discriminator that can tell generated windows apart.

    Frequency-aware input: the window plus a mel-position channel (:func:`mel_position`), so every filter knows
    which band it looks at. Then four stride-2 4x4 convolutions (``width / 8`` ... ``width`` channels),
    :func:`minibatch_std` and a 3x3 convolution; every convolution and
    linear layer is spectrally normalised; LeakyReLU(0.2) throughout. The map is averaged over time only and
    ``logit = linear(h) + <embed(labels), h> / sqrt(dim h)``. Because of the minibatch statistic, real and
    generated windows must be scored in separate calls (``batch_statistics``).
    """

    nets = "v2"
    batch_statistics = True

    def __init__(self, shape: tuple[int, int], width: int = D2_WIDTH) -> None:
        super().__init__()
        m, f = _checked_shape(shape)
        self.shape, self.width = (m, f), width
        chans = [2, width // 8, width // 4, width // 2, width]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [_sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.final = nn.Sequential(_sn(nn.Conv2d(width + 1, width, 3, padding=1)), nn.LeakyReLU(0.2))
        dim = width * (m // _BASE)
        self.linear = _sn(nn.Linear(dim, 1))
        self.embed = _sn(nn.Linear(2, dim))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(torch.cat([x, mel_position(x)], 1))
        h = self.final(minibatch_std(h)).mean(dim=3).flatten(1)
        return self.linear(h).squeeze(1) + (self.embed(labels) * h).sum(1) / math.sqrt(h.shape[1])


G3_WIDTH = 32  # v3 generator channels at the (n_mels/16, n_frames/16) map
D3_WIDTHS = (64, 128, 256, 512)  # channels of the v3 discriminator's four stages


class GeneratorV3(GeneratorV2):
    """G(z, labels) for ``nets: v3``: the v2 generator (upsample + conv) at ``G3_WIDTH`` channels.

    Narrower than v2's on purpose: on the built-in corpus a 64-channel G closes the v3 discriminator's lead within
    two epochs and a 48-channel one holds D_real at ~0.55; against a 32-channel one D leads from the middle of the
    run to its end (docs/gan.md)."""

    nets = "v3"

    def __init__(self, shape: tuple[int, int], latent_dim: int = 64, width: int = G3_WIDTH) -> None:
        super().__init__(shape, latent_dim, width)


class DiscriminatorV3(nn.Module):
    """D(x, labels) for ``nets: v3``: a wide projection discriminator on multi-scale feature statistics.

    The window and its mel-position channel (:func:`mel_position`) pass four stride-2 3x3 convolutions of
    ``widths`` channels (He-normal initialised, zero bias, no normalisation, LeakyReLU 0.2). Each stage's map gives
    its per-channel mean and std over frequency and time; their concatenation, layer-normalised (no affine), is
    read out as ``logit = linear(p) + <embed(labels), p> / sqrt(dim p)``. The wide linear readout over
    statistics of every scale learns in few steps, and the convolutions keep learning new statistics for it: that
    is what lets D lead under the recipe's one D step per four G steps at half the LR on the built-in corpus, where
    v2 never leaves 0.5 (on 4Q it does not lead either).
    (The same readout over *fixed* random convolutions does not: G matches fixed statistics within an epoch.)
    """

    nets = "v3"
    batch_statistics = False

    def __init__(self, shape: tuple[int, int], widths: tuple[int, ...] = D3_WIDTHS) -> None:
        super().__init__()
        self.shape = _checked_shape(shape)
        self.widths = tuple(int(w) for w in widths)
        convs, cin = [], 2
        for w in self.widths:
            conv = nn.Conv2d(cin, w, 3, stride=2, padding=1)
            nn.init.kaiming_normal_(conv.weight, a=0.0, nonlinearity="relu")  # std sqrt(2 / fan_in)
            nn.init.zeros_(conv.bias)
            convs.append(conv)
            cin = w
        self.stages = nn.ModuleList(convs)
        dim = 2 * sum(self.widths)
        self.linear = nn.Linear(dim, 1)
        self.embed = nn.Linear(2, dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer-normalised per-stage channel means and stds, ``(batch, 2 * sum(widths))``."""
        h = torch.cat([x, mel_position(x)], 1)
        stats = []
        for conv in self.stages:
            h = nn.functional.leaky_relu(conv(h), 0.2)
            stats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        p = torch.cat(stats, 1)
        return nn.functional.layer_norm(p, p.shape[1:])

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p = self.features(x)
        return self.linear(p).squeeze(1) + (self.embed(labels) * p).sum(1) / math.sqrt(p.shape[1])


GENERATORS: dict[str, type[nn.Module]] = {"v1": Generator, "v2": GeneratorV2, "v3": GeneratorV3}
DISCRIMINATORS: dict[str, type[nn.Module]] = {"v1": Discriminator, "v2": DiscriminatorV2, "v3": DiscriminatorV3}


def build_gan(
    cfg: GanConfig, shape: tuple[int, int]
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer]:
    """G, D (``cfg.nets``: v1 or v2) and their Adam optimisers (betas (0.5, 0.999)); D's LR is ``d_lr_mult`` x G's."""
    if cfg.nets not in GENERATORS:
        raise TrainingError(f"unknown gan.nets {cfg.nets!r}; choose one of {', '.join(GENERATORS)}")
    g = GENERATORS[cfg.nets](shape, cfg.latent_dim)
    d = DISCRIMINATORS[cfg.nets](shape)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=ADAM_BETAS)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr * cfg.d_lr_mult, betas=ADAM_BETAS)
    return g, d, opt_g, opt_d


def score(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """D's logits for ``real`` then ``fake`` (same ``labels``): one call, or two for a D with batch statistics."""
    if getattr(d, "batch_statistics", False):
        return torch.cat([d(real, labels), d(fake, labels)])
    return d(torch.cat([real, fake]), torch.cat([labels, labels]))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- measurements
def diversity(x: np.ndarray, max_items: int = 128, seed: int = 0) -> float:
    """Mean pairwise L2 distance between windows divided by sqrt(elements per window); 0 when all are identical.

    At most ``max_items`` windows (a seeded sample) are compared.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(x) > max_items:
        x = x[np.random.default_rng(seed).choice(len(x), max_items, replace=False)]
    if len(x) < 2:
        return 0.0
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    iu = np.triu_indices(len(x), 1)
    return float(np.sqrt(d2[iu]).mean() / math.sqrt(x.shape[1]))


EMBED_SEED = 20_240_601  # the frozen embedding's weights: fixed forever, so distances compare across runs
EMBED_WIDTH = 64  # features of the frozen embedding
QUALITY_WINDOWS = 128  # real and generated windows compared per Frechet distance


@functools.lru_cache(maxsize=1)
def frozen_embedding() -> nn.Module:
    """A fixed, randomly initialised (seed ``EMBED_SEED``) conv net: window -> ``EMBED_WIDTH`` pooled features.

    Three stride-2 3x3 convolutions (16, 32, 64 channels, ReLU, He-normal weights from a seeded generator, zero
    biases), then the mean and the std of the last map over frequency and time, projected to ``EMBED_WIDTH`` by a
    seeded random matrix. Random conv features are a standard frozen embedding for distances between image sets;
    this one needs no download and never changes.
    """
    gen = torch.Generator().manual_seed(EMBED_SEED)
    chans = (1, 16, 32, 64)
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(chans):
        conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2.0 / (cin * 9)))
            conv.bias.zero_()
        layers += [conv, nn.ReLU()]
    net = nn.Sequential(*layers)
    proj = torch.randn(2 * chans[-1], EMBED_WIDTH, generator=gen) / math.sqrt(2 * chans[-1])

    class Embedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("proj", proj)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.net(x).flatten(2)
            return torch.cat([h.mean(2), h.std(2)], 1) @ self.proj

    return Embedding().eval().requires_grad_(False)


@torch.no_grad()
def embed_windows(x: np.ndarray, center: float, scale: float, batch: int = 256) -> np.ndarray:
    """:func:`frozen_embedding` features ``(n, EMBED_WIDTH)`` float64 of windows ``(n, 1, m, f)``, standardised
    by ``(x - center) / scale`` first (the real windows' mean and std, the same for both sets compared; a scale of
    ~0, from constant windows, counts as 1)."""
    net = frozen_embedding()
    x = (np.asarray(x, dtype=np.float32) - center) / (scale if scale > 1e-6 else 1.0)
    out = [net(torch.from_numpy(np.ascontiguousarray(x[s : s + batch]))) for s in range(0, len(x), batch)]
    return torch.cat(out).double().numpy() if out else np.zeros((0, EMBED_WIDTH))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` (n, k) and ``b`` (m, k):
    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, with ``tr((C_a C_b)^(1/2))`` computed as the sum of the
    square roots of the eigenvalues of the symmetric ``C_a^(1/2) C_b C_a^(1/2)``. Needs two items per set."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise TrainingError(f"frechet_distance needs two (n >= 2, k) feature sets, got {a.shape} and {b.shape}")
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0.0, None)).sum()
    mean = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    return max(mean + float(np.trace(ca) + np.trace(cb) - 2.0 * cross), 0.0)


def sample_fd(sampler: GanSampler, real: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Frechet distance on :func:`frozen_embedding` features between ``real`` windows and windows generated for
    their ``labels`` (``seed``), both standardised by the real windows' mean and std."""
    center, scale = float(real.mean()), float(real.std())
    fake = sampler(labels, seed=seed)
    return frechet_distance(embed_windows(real, center, scale), embed_windows(fake, center, scale))


def condition_scores(
    sampler: GanSampler,
    scorer: Callable[[np.ndarray], np.ndarray],
    per_condition: int = 64,
    seed: int = 0,
    conditions: tuple[tuple[float, float], ...] | None = None,
) -> list[dict[str, Any]]:
    """Do generated windows carry their condition? ``per_condition`` windows per (valence, arousal) condition
    (default :data:`SAMPLE_CONDITIONS`) scored by ``scorer`` (windows -> (n, 2), e.g. a bundle's
    ``EmotionModel.predict_windows`` or a teacher): the mean score and, for a quadrant condition, the share of
    windows scored in that quadrant (signs of both outputs match)."""
    out = []
    for v, a in conditions or SAMPLE_CONDITIONS:
        pred = np.asarray(scorer(sampler(np.tile([v, a], (per_condition, 1)), seed=seed)), np.float64)
        row: dict[str, Any] = {"condition": [v, a], "mean_score": [float(x) for x in pred.mean(0)]}
        if v != 0.0 and a != 0.0:
            row["in_quadrant"] = float(
                ((np.sign(pred[:, 0]) == np.sign(v)) & (np.sign(pred[:, 1]) == np.sign(a))).mean()
            )
        out.append(row)
    return out


def log_condition_scores(rows: list[dict[str, Any]], prefix: str) -> None:
    """One log line per :func:`condition_scores` row."""
    for row in rows:
        hit = f", {row['in_quadrant']:.0%} in its quadrant" if "in_quadrant" in row else ""
        log(
            f"{prefix}: generated for v{row['condition'][0]:+.1f} a{row['condition'][1]:+.1f} score "
            f"v{row['mean_score'][0]:+.2f} a{row['mean_score'][1]:+.2f}{hit}"
        )


def health_check(
    history: list[dict[str, Any]],
    diversity_ratio: float,
    real_label: float = 0.9,
    fake_label: float = 0.1,
) -> dict[str, Any]:
    """Judge a run against the stabilised recipe's expected behaviour. Returns ``{"ok", "messages", ...}``.

    Expected: D_real within ~0.7-0.9 over the last third of the epochs, D_fake ending in
    0.3-0.6 (it rises towards ~0.4-0.5), D_loss and G_loss ending within ~0.3-0.8.
    Warnings: discriminator collapse (the final D_loss under 0.05 above the lowest value
    the label smoothing ``real_label``/``fake_label`` allows; with unsmoothed labels that
    is simply D_loss < 0.05), a confused discriminator (final D_real - D_fake under 0.05)
    and mode collapse (generated diversity under 0.3 x real).
    A failed check is a warning for the caller to record, never an exception.
    """
    if not history:
        return {"ok": False, "messages": ["no epochs were run"], "diversity_ratio": diversity_ratio}
    lo_r, hi_r = HEALTHY_D_REAL[0] - HEALTH_SLACK, HEALTHY_D_REAL[1] + HEALTH_SLACK
    lo_l, hi_l = HEALTHY_LOSS_END[0] - HEALTH_SLACK, HEALTHY_LOSS_END[1] + HEALTH_SLACK
    last_third = history[-max(1, math.ceil(len(history) / 3)) :]
    d_real = [float(h["D_real"]) for h in last_third]
    end = history[-1]
    msgs: list[str] = []
    ok = True

    def check(cond: bool, good: str, bad: str) -> None:
        nonlocal ok
        msgs.append(good if cond else f"WARNING {bad}")
        ok = ok and cond

    span = f"{min(d_real):.2f}-{max(d_real):.2f}"
    check(
        all(lo_r <= v <= hi_r for v in d_real),
        f"D_real stayed within ~0.7-0.9 over the last {len(d_real)} epoch(s) ({span})",
        f"D_real left ~0.7-0.9 over the last {len(d_real)} epoch(s) ({span})",
    )
    first_fake = float(history[0]["D_fake"])
    trend = "rose" if end["D_fake"] > first_fake else "did not rise"
    check(
        HEALTHY_D_FAKE_END[0] <= end["D_fake"] <= HEALTHY_D_FAKE_END[1],
        f"D_fake {trend} from {first_fake:.2f} to {end['D_fake']:.2f} (0.3-0.6, ~0.4-0.5 ideal)",
        f"D_fake ended at {end['D_fake']:.2f}, outside 0.3-0.6 ({trend} from {first_fake:.2f})",
    )
    for k in ("D_loss", "G_loss"):
        v = float(end[k])
        check(lo_l <= v <= hi_l, f"{k} ended at {v:.3f} (~0.3-0.8)", f"{k} ended at {v:.3f}, outside ~0.3-0.8")
    gap = float(end["D_real"]) - float(end["D_fake"])
    d_confused = gap < D_CONFUSED_GAP
    if d_confused:
        ok = False
        msgs.append(
            f"WARNING discriminator confused: D_real - D_fake is {gap:.3f} at the end, so D gives G no signal "
            "(G's updates outpace D's; see --d-every, --g-steps, --d-lr-mult)"
        )
    floor = smoothing_floor(real_label, fake_label)
    d_collapse = not float(end["D_loss"]) >= floor + D_COLLAPSE_MARGIN
    if d_collapse:
        ok = False
        msgs.append(
            f"WARNING discriminator collapse: D_loss {end['D_loss']:.3f} is at its minimum "
            f"({floor:.3f} with targets {real_label}/{fake_label}): D separates real from generated outright"
        )
    m_collapse = not diversity_ratio >= MODE_COLLAPSE_RATIO
    if m_collapse:
        ok = False
        msgs.append(f"WARNING mode collapse: generated windows have {diversity_ratio:.2f} x the real diversity")
    else:
        msgs.append(f"generated windows have {diversity_ratio:.2f} x the real diversity")
    return {
        "ok": bool(ok),
        "messages": msgs,
        "diversity_ratio": float(diversity_ratio),
        "discriminator_collapse": bool(d_collapse),
        "discriminator_confused": bool(d_confused),
        "mode_collapse": bool(m_collapse),
        "d_real_last_third": [min(d_real), max(d_real)],
        "final": {k: float(end[k]) for k in ("D_loss", "G_loss", "D_real", "D_fake")},
        "d_loss_floor": floor,
    }


# ----------------------------------------------------------------------------- sampling
class GanSampler:
    """Generated windows for given labels, matching ``edgeemo.train.teacher.GanSampler``.

    ``sampler(labels (k, 2), seed) -> (k, 1, n_mels, n_frames)`` float32; the same labels
    and seed give the same windows (the latent of row ``i`` depends only on ``seed`` and ``i``).
    """

    def __init__(self, generator: nn.Module, device: str = "cpu", batch_size: int = 256) -> None:
        self.g = generator.to(device).eval()
        self.latent_dim = generator.latent_dim
        self.shape = generator.shape
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> GanSampler:
        """Rebuild the generator saved in ``gen.pt``."""
        ck = load_checkpoint(path)
        if ck.get("stage") != "gan" or "spec" not in ck:
            raise TrainingError(f"{path} is not a GAN generator file")
        return cls(_generator_from(ck["spec"], ck["state_dict"]), device)

    @torch.no_grad()
    def __call__(self, labels: np.ndarray, seed: int) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 2)
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(len(labels), self.latent_dim, generator=gen)
        out = [
            self.g(
                z[s : s + self.batch_size].to(self.device),
                torch.from_numpy(labels[s : s + self.batch_size]).to(self.device),
            )
            .float()
            .cpu()
            for s in range(0, len(labels), self.batch_size)
        ]
        if not out:
            return np.zeros((0, 1, *self.shape), np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)


def _spec(g: nn.Module) -> dict[str, Any]:
    return {"shape": list(g.shape), "latent_dim": g.latent_dim, "width": g.width, "nets": g.nets}


def _generator_from(spec: dict[str, Any], state: dict[str, Any]) -> nn.Module:
    nets = spec.get("nets", "v1")
    if nets not in GENERATORS:
        raise TrainingError(f"generator file names unknown nets {nets!r}")
    cls = GENERATORS[nets]
    g = cls(tuple(spec["shape"]), spec["latent_dim"], spec.get("width", G_WIDTH if nets == "v1" else G2_WIDTH))
    g.load_state_dict(state)
    return g.eval()


# ----------------------------------------------------------------------------- plots
def _figure_bytes(fig: Any, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def plot_gan_curves(history: list[dict[str, Any]], path: Path) -> None:
    """D_loss/G_loss and D_real/D_fake per epoch (healthy ranges shaded) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for k in ("D_loss", "G_loss"):
        axes[0].plot(ep, [h[k] for h in history], marker=".", label=k)
    axes[0].axhspan(*HEALTHY_LOSS_END, color="grey", alpha=0.08)
    for k in ("D_real", "D_fake"):
        axes[1].plot(ep, [h[k] for h in history], marker=".", label=k)
    axes[1].plot(ep, [h["noise_std"] for h in history], color="grey", ls=":", label="noise std")
    axes[1].axhspan(*HEALTHY_D_REAL, color="tab:blue", alpha=0.08)
    axes[1].axhspan(0.4, 0.5, color="tab:orange", alpha=0.08)
    for ax, title in zip(axes, ("losses", "mean D outputs (shaded: healthy ranges)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("conditional GAN")
    fig.tight_layout()
    atomic_write_bytes(path, _figure_bytes(fig, 90))


SAMPLE_CONDITIONS = ((0.7, 0.7), (-0.7, 0.7), (-0.7, -0.7), (0.7, -0.7), (0.0, 0.0))  # quadrants, centre


def plot_samples(sampler: GanSampler, train: WindowSet, path: Path, per_condition: int = 2, seed: int = 0) -> None:
    """A grid per (valence, arousal) condition: the real window with the nearest label above generated ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array(SAMPLE_CONDITIONS, dtype=np.float32)
    fake = sampler(np.repeat(labels, per_condition, axis=0), seed=seed)
    nearest = [int(np.argmin(((train.targets - c) ** 2).sum(1))) for c in labels]
    real = train.batch(nearest)[:, 0]
    vmin, vmax = (float(v) for v in np.percentile(real, [1, 99]))
    rows = 1 + per_condition
    fig, axes = plt.subplots(rows, len(labels), figsize=(3 * len(labels), 2.1 * rows), squeeze=False)
    for j, (v, a) in enumerate(SAMPLE_CONDITIONS):
        tv, ta = train.targets[nearest[j]]
        panels = [(real[j], f"real v{tv:+.2f} a{ta:+.2f}")]
        panels += [(fake[per_condition * j + r, 0], f"generated v{v:+.1f} a{a:+.1f}") for r in range(per_condition)]
        for i, (img, title) in enumerate(panels):
            axes[i, j].imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    fig.suptitle("top: real window with the nearest label; below: generated (mel bin up, frame right)", fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, _figure_bytes(fig, 80))


# ----------------------------------------------------------------------------- training
@dataclass
class GanResult:
    """What :func:`train_gan` returns: per-epoch history, health report, diversity ratio, ``gen.pt``."""

    history: list[dict[str, Any]]
    health: dict[str, Any]
    diversity_ratio: float
    generator_path: Path


def gan_recipe(cfg: GanConfig, ctx: StageContext) -> dict[str, Any]:
    """The settings a trained GAN depends on (compared on resume and reuse): its section but the mixing ratio,
    and the run's front end, seed and windows per song. A field added later is left out at its neutral value, so a
    GAN trained before the field existed is still recognised."""
    added = {k.removeprefix("gan."): v for k, v in ADDED_FIELDS.items() if k.startswith("gan.")}
    keep = {k: v for k, v in to_plain(cfg).items() if k != "ratio" and not (k in added and added[k] == v)}
    return keep | {"features": ctx.features.to_dict(), "seed": ctx.seed, "windows_per_song": ctx.windows_per_song}


def _recipe_mismatch(saved: dict[str, Any] | None, now: dict[str, Any]) -> str:
    saved = saved or {}
    diff = [
        f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)
    ]
    return ", ".join(diff[:4]) + (" ..." if len(diff) > 4 else "")


def _recipe_line(cfg: GanConfig, g: nn.Module, d: nn.Module) -> str:
    return (
        f"[gan] nets {cfg.nets}: G {count_parameters(g) / 1e3:.0f}k params, D {count_parameters(d) / 1e3:.0f}k | "
        f"lr G {cfg.lr:g}, D {cfg.lr * cfg.d_lr_mult:g} (x{cfg.d_lr_mult:g}) | "
        f"D targets real {cfg.real_label:g} fake {cfg.fake_label:g} | "
        f"instance noise {cfg.noise_std:g} -> {cfg.noise_min:g} | "
        f"D step every {cfg.d_every} iteration(s), {cfg.g_steps} G step(s) per iteration | "
        f"grad clip {CLIP_NORM:g}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _batches(n_iter: int, progress: bool, desc: str) -> Iterator[int]:
    return iter(progress_iter(range(n_iter), progress, desc))


def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits; per-window ``targets`` are broadcast over any per-patch logits."""
    t = targets.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    return nn.functional.binary_cross_entropy_with_logits(logits, t)


def _finite(value: torch.Tensor, what: str, epoch: int, iteration: int, last_path: Path) -> None:
    if not torch.isfinite(value):
        raise TrainingError(
            f"GAN: {what} became {value.item()} at epoch {epoch}, iteration {iteration}; stopped, "
            f"the last good checkpoint is {last_path if last_path.exists() else 'none yet'}"
        )


@dataclass(frozen=True)
class QualityReference:
    """The fixed real windows sample quality is measured against: ``real`` (``QUALITY_WINDOWS`` seeded windows)
    and their ``labels``; ``held``/``held_labels``, a disjoint real sample (empty when the set is too small);
    ``fd_floor``, the Frechet distance between the two (what a perfect G would reach), and ``trtr``, the CCC
    a probe trained on ``real`` reaches on ``held`` (what "train on generated, test on real" is compared with).
    """

    real: np.ndarray
    labels: np.ndarray
    held: np.ndarray
    held_labels: np.ndarray
    fd_floor: float | None
    trtr: float | None

    @property
    def center(self) -> float:
        return float(self.real.mean())

    @property
    def scale(self) -> float:
        return float(self.real.std())


def quality_reference(train: WindowSet, seed: int) -> QualityReference:
    """The :class:`QualityReference` of ``train`` for ``seed``."""
    order = np.random.default_rng([seed, 99]).permutation(len(train))
    pick, other = order[:QUALITY_WINDOWS], order[QUALITY_WINDOWS : 2 * QUALITY_WINDOWS]
    real = train.batch(pick)
    labels = np.ascontiguousarray(train.targets[pick], dtype=np.float32)
    held = train.batch(other) if len(other) else real[:0]
    held_labels = np.ascontiguousarray(train.targets[other], dtype=np.float32)
    floor = trtr = None
    if len(other) >= 2:
        center, scale = float(real.mean()), float(real.std())
        e_real, e_held = embed_windows(real, center, scale), embed_windows(held, center, scale)
        floor = frechet_distance(e_real, e_held)
        trtr = probe_ccc(e_real, labels, e_held, held_labels)
    return QualityReference(real, labels, held, held_labels, floor, trtr)


TSTR_ALPHA = 1.0  # ridge penalty of the probe on standardised frozen-embedding features


def probe_ccc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Mean over valence and arousal of the CCC on ``test`` of a ridge (``TSTR_ALPHA``) fitted on ``train``
    (features standardised by the training set's mean and sd)."""
    mean, std = train_x.mean(0), np.maximum(train_x.std(0), 1e-8)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    y_mean = train_y.mean(0)
    w = np.linalg.solve(a.T @ a + TSTR_ALPHA * np.eye(a.shape[1]), a.T @ (train_y - y_mean))
    pred = b @ w + y_mean
    return float(np.mean([metrics.ccc(test_y[:, k], pred[:, k]) for k in range(test_y.shape[1])]))


def tstr_score(sampler: GanSampler, ref: QualityReference, seed: int) -> float | None:
    """Train on synthetic, test on real: :func:`probe_ccc` of a probe fitted on windows generated for the
    reference labels, scored on the held-out real windows (None without a held-out sample)."""
    if len(ref.held) < 2:
        return None
    fake = embed_windows(sampler(ref.labels, seed=seed), ref.center, ref.scale)
    return probe_ccc(fake, ref.labels, embed_windows(ref.held, ref.center, ref.scale), ref.held_labels)


def train_gan(
    train: WindowSet,
    cfg: GanConfig,
    ctx: StageContext,
    out_dir: Path,
    progress: bool = True,
    scorer: Callable[[np.ndarray], np.ndarray] | None = None,
) -> GanResult:
    """Train the conditional GAN on ``train``'s windows with the stabilised recipe; resume or reuse when possible.

    Each epoch draws ``epoch_window_indices(train, ctx.windows_per_song, ctx.seed, epoch)``
    (0-based epoch), shuffles it and iterates in batches of ``cfg.batch_size`` with the
    windows' targets as conditions. Writes ``last.pt`` (every epoch), ``metrics.jsonl``,
    ``curves.png``, ``health.json``, ``samples.png`` and finally ``gen.pt`` to ``out_dir``.
    Sample quality: every epoch records ``FD``, the Frechet distance (:func:`sample_fd`) between a fixed real sample
    and windows generated for its labels, and ``TSTR`` (:func:`tstr_score`, when the set holds a disjoint real
    sample); ``health.json`` adds ``quality`` (the final FD, the real-vs-real floor, ``tstr_ccc`` beside
    ``trtr_ccc``, the same probe trained on real windows, and, with a ``scorer`` (windows -> (n, 2)),
    :func:`condition_scores`).
    An existing ``gen.pt`` trained with the same settings is returned without training;
    one (or a ``last.pt``) from other settings raises :class:`TrainingError`. A NaN or
    infinite loss raises :class:`TrainingError` naming the epoch; ``last.pt`` then still
    holds the last good epoch.
    """
    check_gan_config(cfg, ctx.features.shape)
    if len(train) == 0:
        raise TrainingError("GAN: the training set has no windows")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen_path, last_path = out_dir / "gen.pt", out_dir / "last.pt"
    recipe = gan_recipe(cfg, ctx)
    if gen_path.is_file():
        ck = load_checkpoint(gen_path)
        if ck.get("recipe") != recipe:
            raise TrainingError(
                f"{gen_path} was trained with other GAN settings ({_recipe_mismatch(ck.get('recipe'), recipe)}); "
                "use --restart or a new run name"
            )
        log(f"[gan] {gen_path} was trained with these settings; reusing it")
        return GanResult(ck["history"], ck["health"], float(ck["diversity_ratio"]), gen_path)

    device = resolve_device(ctx.device)
    torch.manual_seed(ctx.seed)
    g, d, opt_g, opt_d = build_gan(cfg, ctx.features.shape)
    with torch.no_grad():  # start G at the data's mean level, so D cannot win on the offset alone
        probe = np.random.default_rng(ctx.seed).choice(len(train), min(256, len(train)), replace=False)
        g.out.bias.fill_(float(train.batch(probe).mean()))
    g.to(device)
    d.to(device)
    history: list[dict[str, Any]] = []
    start = 0
    if last_path.is_file():
        ck = load_checkpoint(last_path)
        if ck.get("stage") != "gan" or ck.get("recipe") != recipe:
            raise TrainingError(
                f"{last_path} was trained with other GAN settings ({_recipe_mismatch(ck.get('recipe'), recipe)}); "
                "use --restart or a new run name"
            )
        g.load_state_dict(ck["state_dict"])
        d.load_state_dict(ck["discriminator"])
        opt_g.load_state_dict(ck["optimizer"])
        opt_d.load_state_dict(ck["optimizer_d"])
        history, start = list(ck["history"]), int(ck["epoch"])
        if start < cfg.epochs:
            log(f"[gan] resuming from {last_path} at epoch {start + 1}/{cfg.epochs}")
    else:
        log(_recipe_line(cfg, g, d))
    bs, epochs = cfg.batch_size, cfg.epochs
    ref = quality_reference(train, ctx.seed)
    for epoch in range(start, epochs):  # 0-based here; recorded 1-based like the other stages
        t0 = time.perf_counter()
        seed_everything(ctx.seed * 100_003 + 70_001 + epoch)
        sigma = noise_std(epoch, epochs, cfg.noise_std, cfg.noise_min)
        idx = epoch_window_indices(train, ctx.windows_per_song, ctx.seed, epoch)
        idx = idx[np.random.default_rng([ctx.seed, epoch, 7]).permutation(len(idx))]
        n_iter = math.ceil(len(idx) / bs)
        sums = dict.fromkeys(("D_loss", "G_loss", "D_real", "D_fake", "D_grad_norm", "G_grad_norm"), 0.0)
        d_steps = g_steps = d_clipped = g_clipped = 0
        g.train()
        d.train()
        for it in _batches(n_iter, progress, f"gan {epoch + 1}/{epochs}"):
            b = idx[it * bs : (it + 1) * bs]
            real = torch.from_numpy(train.batch(b)).to(device)
            y = torch.from_numpy(np.ascontiguousarray(train.targets[b], dtype=np.float32)).to(device)
            n = real.shape[0]
            if d_step_due(it, cfg.d_every):
                with torch.no_grad():
                    fake = g(torch.randn(n, cfg.latent_dim, device=device), y)
                both = torch.cat([real, fake])
                both = both + sigma * torch.randn_like(both)  # instance noise on real and fake
                out = score(d, both[:n], both[n:], y)
                out_real, out_fake = out[:n], out[n:]
                loss_d = 0.5 * (
                    _bce(out_real, smoothed_targets(n, True, cfg).to(device))
                    + _bce(out_fake, smoothed_targets(n, False, cfg).to(device))
                )
                _finite(loss_d, "D_loss", epoch + 1, it + 1, last_path)
                norm = optimizer_step(loss_d, d, opt_d)
                d_steps += 1
                d_clipped += norm > CLIP_NORM
                sums["D_grad_norm"] += norm
                sums["D_loss"] += loss_d.item()
                sums["D_real"] += torch.sigmoid(out_real).mean().item()
                sums["D_fake"] += torch.sigmoid(out_fake).mean().item()
            d.requires_grad_(False)  # G steps need gradients through D, not of D's weights
            try:
                for _ in range(cfg.g_steps):
                    fake = g(torch.randn(n, cfg.latent_dim, device=device), y)
                    out = d(fake + sigma * torch.randn_like(fake), y)
                    loss_g = _bce(out, torch.ones(n, device=device))  # non-saturating G loss
                    _finite(loss_g, "G_loss", epoch + 1, it + 1, last_path)
                    norm = optimizer_step(loss_g, g, opt_g)
                    g_steps += 1
                    g_clipped += norm > CLIP_NORM
                    sums["G_grad_norm"] += norm
                    sums["G_loss"] += loss_g.item()
            finally:
                d.requires_grad_(True)
        rec: dict[str, Any] = {
            "epoch": epoch + 1,
            "D_loss": sums["D_loss"] / max(d_steps, 1),
            "G_loss": sums["G_loss"] / max(g_steps, 1),
            "D_real": sums["D_real"] / max(d_steps, 1),
            "D_fake": sums["D_fake"] / max(d_steps, 1),
            "noise_std": sigma,
            "windows": len(idx),
            "iterations": n_iter,
            "d_steps": d_steps,
            "g_steps": g_steps,
            "d_lr": opt_d.param_groups[0]["lr"],
            "g_lr": opt_g.param_groups[0]["lr"],
            "D_grad_norm": sums["D_grad_norm"] / max(d_steps, 1),
            "G_grad_norm": sums["G_grad_norm"] / max(g_steps, 1),
            "D_clipped_frac": d_clipped / max(d_steps, 1),
            "G_clipped_frac": g_clipped / max(g_steps, 1),
            "FD": sample_fd(GanSampler(g, str(device)), ref.real, ref.labels, ctx.seed),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        tstr = tstr_score(GanSampler(g, str(device)), ref, ctx.seed)
        if tstr is not None:
            rec["TSTR"] = tstr
        history.append(rec)
        save_checkpoint(
            last_path,
            {
                "stage": "gan",
                "edgeemo_version": __version__,
                "spec": _spec(g),
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
        plot_gan_curves(history, out_dir / "curves.png")
        log(
            f"[gan] epoch {epoch + 1}/{epochs} D_loss {rec['D_loss']:.3f} G_loss {rec['G_loss']:.3f} | "
            f"D_real {rec['D_real']:.3f} D_fake {rec['D_fake']:.3f} | noise {sigma:.3f} | "
            f"D steps {d_steps} G steps {g_steps} | "
            f"clipped D {rec['D_clipped_frac']:.0%} G {rec['G_clipped_frac']:.0%} | FD {rec['FD']:.3f} "
            f"TSTR {_fmt(rec.get('TSTR'))} | {rec['seconds']:.1f} s"
        )

    # ---- after training: diversity, health, samples, gen.pt
    sampler = GanSampler(_generator_from(_spec(g), {k: v.cpu() for k, v in g.state_dict().items()}))
    pick = np.random.default_rng([ctx.seed, 99]).choice(len(train), min(128, len(train)), replace=False)
    real_div = diversity(train.batch(pick))
    ratio = diversity(sampler(train.targets[pick], seed=ctx.seed)) / real_div if real_div > 0 else float("nan")
    health = health_check(history, ratio, cfg.real_label, cfg.fake_label)
    health["real_diversity"] = real_div
    quality: dict[str, Any] = {
        "fd": sample_fd(sampler, ref.real, ref.labels, ctx.seed),
        "fd_real_floor": ref.fd_floor,
        "tstr_ccc": tstr_score(sampler, ref, ctx.seed),
        "trtr_ccc": ref.trtr,
    }
    if scorer is not None:
        quality["conditions"] = condition_scores(sampler, scorer, seed=ctx.seed)
    health["quality"] = quality
    log(
        f"GAN health: sample FD {quality['fd']:.3f} (real vs real {_fmt(ref.fd_floor)}); train on generated, "
        f"test on real: CCC {_fmt(quality['tstr_ccc'])} (train on real: {_fmt(ref.trtr)})"
    )
    log_condition_scores(quality.get("conditions", []), "GAN health")
    for msg in health["messages"]:
        log(f"GAN health: {msg}")
    log(f"GAN health: {'OK' if health['ok'] else 'WARNING: outside the healthy ranges (training continues)'}")
    atomic_write_json(out_dir / "health.json", health)
    plot_samples(sampler, train, out_dir / "samples.png", seed=ctx.seed)
    save_checkpoint(
        gen_path,
        {
            "stage": "gan",
            "edgeemo_version": __version__,
            "spec": _spec(g),
            "state_dict": sampler.g.state_dict(),
            "history": history,
            "health": health,
            "diversity_ratio": ratio,
            "recipe": recipe,
        },
    )
    return GanResult(history, health, ratio, gen_path)
