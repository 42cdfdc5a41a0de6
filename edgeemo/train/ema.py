"""An exponential moving average of a model's weights (the weights that are validated, kept and exported).

Owns the shadow copy of every state-dict entry (floating entries averaged after each
optimiser step with decay ``min(decay, (1 + n) / (10 + n))``, the usual warm-up, so
early averages are not dominated by the random start; integer buffers copied) and
swapping it into the model for validation. The shared loop uses it when
``FitConfig.ema_decay`` is set: ``best.pt``/``last.pt`` then hold the averaged weights
as ``state_dict`` (what every reader loads) and the raw training weights as
``train_state_dict`` (what a resumed run continues from).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightEma:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                self.shadow[k].copy_(v)
        self.updates += 1

    def load(self, shadow: dict[str, torch.Tensor], updates: int) -> None:
        self.shadow = {k: v.detach().clone() for k, v in shadow.items()}
        self.updates = int(updates)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Inside: ``model`` holds the averaged weights; yields the raw ones, restored on exit."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield raw
        finally:
            model.load_state_dict(raw)
