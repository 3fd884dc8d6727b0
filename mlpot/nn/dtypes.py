"""Floating-point type control while modules are built."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Set torch's default dtype inside the block and restore the previous one after it.

    e3nn 0.6 stores its Clebsch-Gordan coefficients and change-of-basis matrices in the default
    dtype when a module is built. Built in float32 and cast to float64 afterwards, a model keeps
    float32-rounded coefficients and is equivariant only to about 1e-9; built in float64 and cast
    down, it is exact in either dtype.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
