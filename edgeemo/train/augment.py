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
