"""Sums over edges or atoms with native torch ops (``index_add``); no torch-scatter needed."""

from __future__ import annotations

import torch


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum the rows of ``values`` (n, ...) into ``size`` rows chosen by ``index`` (n,)."""
    out = values.new_zeros((size,) + tuple(values.shape[1:]))
    return out.index_add(0, index, values)
