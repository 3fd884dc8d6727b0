"""Radial basis functions and the smooth cutoff envelope."""

from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff u(r) that goes from 1 at r = 0 to 0 at the cutoff.

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2) with x = r / r_c, and u = 0
    beyond r_c. The value and the first two derivatives vanish at r_c, so energies and forces are
    continuous as a pair crosses the cutoff (Klicpera, Groß and Günnemann, "Directional Message
    Passing for Molecular Graphs", ICLR 2020, eq. 8).
    """

    def __init__(self, cutoff: float, exponent: int = 5):
        super().__init__()
        if exponent < 2:
            raise ValueError(f"envelope exponent must be at least 2, got {exponent}")
        self.cutoff = float(cutoff)
        self.exponent = int(exponent)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """Map (n_edges,) lengths in Å to (n_edges,) envelope values."""
        p = self.exponent
        x = lengths / self.cutoff
        value = (
            1.0
            - (p + 1) * (p + 2) / 2 * x**p
            + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)
        )
        return torch.where(x < 1.0, value, torch.zeros_like(value))


class BesselBasis(nn.Module):
    """Radial basis sqrt(2/r_c) sin(n π r / r_c) / r for n = 1 … num_basis (Klicpera et al., 2020, eq. 7)."""

    def __init__(self, cutoff: float, num_basis: int = 8):
        super().__init__()
        self.cutoff = float(cutoff)
        frequencies = math.pi / self.cutoff * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        self.register_buffer("frequencies", frequencies)
        self.prefactor = math.sqrt(2.0 / self.cutoff)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """Map (n_edges,) lengths in Å to (n_edges, num_basis) basis values."""
        r = lengths.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r) / r
