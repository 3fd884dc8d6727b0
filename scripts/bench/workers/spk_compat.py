"""Make SchNetPack 2.1.1 importable and its model files loadable under torch 2.13.

- schnetpack.data.loader imports the type variable ``T_co`` from
  ``torch.utils.data.dataloader``, which torch 2.13 no longer defines there. It is only used
  in a type hint, so an equivalent TypeVar is put back before schnetpack is imported.
- SchNetPack saves whole pickled models and loads them with ``torch.load`` without
  ``weights_only=False``, which torch 2.6 and newer reject by default. Setting
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` restores full unpickling, which is safe here only
  because the benchmark loads model files that it trained itself.

Import this module before schnetpack.
"""

from __future__ import annotations

import os
import typing

import torch.utils.data.dataloader as _dataloader

if not hasattr(_dataloader, "T_co"):
    _dataloader.T_co = typing.TypeVar("T_co", covariant=True)

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
