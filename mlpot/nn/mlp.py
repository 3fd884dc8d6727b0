"""Multilayer perceptrons with variance-preserving initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn

# Second moment of SiLU(x) for x ~ N(0, 1) is about 0.356; dividing by its square root keeps
# activations of unit scale through deep stacks.
_SILU_SCALE = 1.0 / math.sqrt(0.356)


class ScaledSiLU(nn.Module):
    """SiLU scaled so that a standard normal input gives an output of unit second moment."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) * _SILU_SCALE


def mlp(sizes: list[int], bias: bool = True, final_activation: bool = False) -> nn.Sequential:
    """Build Linear layers of the given ``sizes`` with scaled SiLU between them.

    Weights start from N(0, 1/fan_in) and biases from zero, so unit-scale inputs give unit-scale
    outputs at initialisation. With ``bias=False`` the network maps zero to zero, which the energy
    models use so that an atom without neighbours gets exactly no interaction energy.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs an input and an output size, got {sizes}")
    layers: list[nn.Module] = []
    for position, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(size_in, size_out, bias=bias)
        nn.init.normal_(linear.weight, std=1.0 / math.sqrt(size_in))
        if bias:
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        last = position == len(sizes) - 2
        if not last or final_activation:
            layers.append(ScaledSiLU())
    return nn.Sequential(*layers)
