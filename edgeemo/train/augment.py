"""Spectrogram augmentation of training batches: pitch shift along the mel axis and SpecAugment masks.

Owns :class:`Augment` (what to do, from the training config) and :func:`augment_batch`
(doing it to a ``(B, 1, n_mels, n_frames)`` batch of log-mel windows). All randomness
comes from torch's global generator, which the fit loop re-seeds from ``(seed, epoch)``,
so a resumed run augments exactly as an uninterrupted one.

* **Shift**: each window moves up or down by up to ``shift`` mel bins (the vacated
  rows repeat the edge row). Above ~500 Hz one of the 64 default mel bins is about one
  to two semitones, so this is a cheap transposition for data whose key is a nuisance.
  It is off by default: on the built-in corpus, where register is a valence cue, it
  wiped valence out (docs).
* **Mixup** (Zhang et al. 2018; :func:`mixup_batch`): each window is blended with another window of the
  batch, ``lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(alpha, alpha)``, and its targets alike.
* **Masks** (Park et al. 2019): one band of up to ``freq_mask`` mel bins and one span of
  up to ``time_mask`` frames per window are set to the window's mean, so no single cue
  region can carry the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augment:
    shift: int = 0  # max mel-bin shift, either way
    freq_mask: int = 0  # max masked mel bins
    time_mask: int = 0  # max masked frames

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.freq_mask > 0 or self.time_mask > 0

    def check(self, n_mels: int, n_frames: int) -> None:
        """Raise ValueError when a setting cannot apply to ``n_mels x n_frames`` windows."""
        for name, value, limit in (
            ("shift", self.shift, n_mels // 2),
            ("freq_mask", self.freq_mask, n_mels // 2),
            ("time_mask", self.time_mask, n_frames // 2),
        ):
            if not 0 <= value <= limit:
                raise ValueError(f"augment {name} must lie in 0..{limit} for {n_mels}x{n_frames} windows, got {value}")


def _shift_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move each window's mel rows by ``shifts[b]`` (positive: up in pitch), repeating the edge row."""
    n_mels = x.shape[-2]
    rows = torch.arange(n_mels, device=x.device)[None, :] - shifts[:, None]  # (B, n_mels) source row
    rows = rows.clamp(0, n_mels - 1)
    index = rows[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[-1])
    return torch.gather(x, 2, index)


def _band_mask(batch: int, size: int, max_width: int, device: torch.device) -> torch.Tensor:
    """(B, size) bool: one random band of width 0..max_width per row."""
    width = torch.randint(0, max_width + 1, (batch,), device=device)
    start = (torch.rand(batch, device=device) * (size - width + 1)).floor().long()
    pos = torch.arange(size, device=device)[None, :]
    return (pos >= start[:, None]) & (pos < (start + width)[:, None])


def augment_batch(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """An augmented copy of the windows ``x`` (B, C, n_mels, n_frames); ``x`` itself is untouched."""
    if not aug.active:
        return x
    b, _, n_mels, n_frames = x.shape
    out = x
    if aug.shift > 0:
        shifts = torch.randint(-aug.shift, aug.shift + 1, (b,), device=x.device)
        out = _shift_rows(out, shifts)
    if aug.freq_mask > 0 or aug.time_mask > 0:
        mean = out.mean(dim=(-2, -1), keepdim=True)
        mask = torch.zeros(b, 1, n_mels, n_frames, dtype=torch.bool, device=x.device)
        if aug.freq_mask > 0:
            mask |= _band_mask(b, n_mels, aug.freq_mask, x.device)[:, None, :, None]
        if aug.time_mask > 0:
            mask |= _band_mask(b, n_frames, aug.time_mask, x.device)[:, None, None, :]
        out = torch.where(mask, mean, out)
    return out


def mixup_batch(
    x: torch.Tensor, targets: torch.Tensor, alpha: float, mask_cols: slice | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows and targets blended pairwise with a shuffled copy of the batch: ``lam * a + (1 - lam) * b``
    per window, ``lam ~ Beta(alpha, alpha)``. Target columns in ``mask_cols`` (0/1 masks) are multiplied
    instead, so a blend counts as labelled only when both windows were."""
    if alpha <= 0 or x.shape[0] < 2:
        return x, targets
    lam = torch.distributions.Beta(alpha, alpha).sample((x.shape[0],)).to(x.device, x.dtype)
    perm = torch.randperm(x.shape[0], device=x.device)
    w = lam.view(-1, *([1] * (x.dim() - 1)))  # one weight per window, broadcast over its other axes
    mixed_x = w * x + (1 - w) * x[perm]
    lam_t = lam.to(targets.dtype)[:, None]
    mixed_t = lam_t * targets + (1 - lam_t) * targets[perm]
    if mask_cols is not None:
        mixed_t[:, mask_cols] = targets[:, mask_cols] * targets[perm][:, mask_cols]
    return mixed_x, mixed_t
