"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage(nn.Module):
    """A copy of a model whose weights follow the trained ones: w_ema ← d·w_ema + (1 - d)·w.

    The decay d ramps up as min(decay, (1 + n) / (10 + n)) over the first updates n, so early
    averages are not dominated by the random initial weights. The copy is a submodule, so its
    weights and update count are saved in checkpoints and restored on resume.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.int64))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the averaged weights towards those of ``model``."""
        self.num_updates += 1
        n = float(self.num_updates)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        averaged = list(self.model.parameters())
        current = [parameter.detach() for parameter in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
