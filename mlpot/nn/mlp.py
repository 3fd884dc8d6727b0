"""Multilayer perceptrons."""

from __future__ import annotations

from torch import nn


def mlp(sizes: list[int], bias: bool = True, final_activation: bool = False) -> nn.Sequential:
    """Build Linear layers of the given ``sizes`` with SiLU between them.

    With ``bias=False`` the network maps zero to zero, which the energy models use so that an atom
    without neighbours gets exactly no interaction energy.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs an input and an output size, got {sizes}")
    layers: list[nn.Module] = []
    for position, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(size_in, size_out, bias=bias))
        last = position == len(sizes) - 2
        if not last or final_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)
