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

    It is evaluated in the factored form u(x) = (1 - x)³ Σ_{k<p} (k+1)(k+2)/2 x^k, which equals the
    polynomial above but keeps its relative precision near x = 1, where the expanded form cancels
    to float32 round-off.
    """

    def __init__(self, cutoff: float, exponent: int = 5):
        super().__init__()
        if exponent < 2:
            raise ValueError(f"envelope exponent must be at least 2, got {exponent}")
        self.cutoff = float(cutoff)
        self.exponent = int(exponent)
        # Coefficients of the cofactor, highest power first, for Horner's scheme.
        self.coefficients = [(k + 1) * (k + 2) / 2 for k in reversed(range(self.exponent))]

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """Map (n_edges,) lengths in Å to (n_edges,) envelope values."""
        x = lengths / self.cutoff
        cofactor = torch.full_like(x, self.coefficients[0])
        for coefficient in self.coefficients[1:]:
            cofactor = cofactor * x + coefficient
        value = (1.0 - x) ** 3 * cofactor
        return torch.where(x < 1.0, value, torch.zeros_like(value))


class BesselBasis(nn.Module):
    """Radial basis sin(n π x) / x with x = r / r_c, for n = 1 … num_basis.

    The Bessel functions of Klicpera, Groß and Günnemann (ICLR 2020, eq. 7) up to a constant
    factor, written in the dimensionless x so that the values are of order one for any cutoff.
    """

    def __init__(self, cutoff: float, num_basis: int = 8):
        super().__init__()
        self.cutoff = float(cutoff)
        frequencies = math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        self.register_buffer("frequencies", frequencies)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """Map (n_edges,) lengths in Å to (n_edges, num_basis) basis values."""
        x = (lengths / self.cutoff).unsqueeze(-1)
        return torch.sin(self.frequencies * x) / x
