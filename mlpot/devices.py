"""Checking a torch device string before a model is moved to it."""

from __future__ import annotations

import torch

from mlpot.errors import ConfigError

#: Device types that mlpot evaluates on.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check that this torch can use it.

    Accepts ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"``, or a ``torch.device`` of those
    types. Raises :class:`~mlpot.errors.ConfigError` with the fix when the string is not a
    device, when torch was built without CUDA or finds no GPU, when the GPU index does not exist,
    or when MPS is not available.
    """
    if isinstance(device, torch.device):
        parsed = device
    else:
        try:
            parsed = torch.device(str(device).strip())
        except RuntimeError:
            raise ConfigError(
                f"device {device!r} is not a torch device; use cpu, cuda, cuda:N (N counts from 0) or mps"
            ) from None
    if parsed.type not in DEVICE_TYPES:
        raise ConfigError(f"device {device!r} is not supported; use cpu, cuda, cuda:N (N counts from 0) or mps")

    if parsed.type == "cuda":
        _check_cuda(device, parsed)
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested, but MPS is not available on this machine; use cpu")
    return parsed


def _check_cuda(device: str | torch.device, parsed: torch.device) -> None:
    if torch.version.cuda is None:
        raise ConfigError(
            f"device {device!r} requested, but this torch ({torch.__version__}) is built without CUDA; use cpu, "
            "or install a CUDA build of torch (docs/getting-started.md, section Install)"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested, but torch sees no CUDA GPU (check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES); use cpu"
        )
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise ConfigError(
            f"device {device!r} requested, but torch sees {count} CUDA GPU(s), numbered from 0; "
            f"use cuda:0 to cuda:{count - 1}"
        )
