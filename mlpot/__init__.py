"""mlpot: machine-learning interatomic potentials for molecules, with symmetry built in."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from mlpot.models.potential import Potential

__version__ = "0.1.0"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Potential:
    """Load a model file written by :func:`mlpot.models.io.save_model`; see :func:`mlpot.models.io.load_model`.

    The import happens here, not at package import, so that ``import mlpot`` stays fast.
    """
    from mlpot.models.io import load_model as _load_model

    return _load_model(path, device=device)


def __getattr__(name: str):
    # MLPotCalculator imports ASE and torch, so it is loaded on first access, not at package import.
    if name == "MLPotCalculator":
        from mlpot.calculator import MLPotCalculator

        return MLPotCalculator
    raise AttributeError(f"module 'mlpot' has no attribute {name!r}")
