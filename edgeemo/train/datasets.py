"""Torch views of :class:`edgeemo.data.windows.WindowSet`, optionally mixed with GAN-generated windows."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeemo.data.windows import WindowSet


class TorchWindows(Dataset):
    """``(window (1, n_mels, n_frames), target)`` float32 for the given window indices.

    ``targets`` (one row per window of the WindowSet) replaces the label targets, e.g. with
    labels and cached teacher outputs side by side.
    """

    def __init__(self, windows: WindowSet, indices: np.ndarray, targets: np.ndarray | None = None) -> None:
        self.windows = windows
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = windows.targets if targets is None else np.asarray(targets, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        x = torch.from_numpy(self.windows.window(j))[None]
        y = torch.from_numpy(self.targets[j])
        return x, y


class ArrayWindows(Dataset):
    """In-memory windows ``(N, 1, n_mels, n_frames)`` and targets ``(N, 2)`` (e.g. GAN samples)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != len(y):
            raise ValueError("windows and targets differ in length")
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y, dtype=np.float32))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]
