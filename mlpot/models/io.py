"""Model files: a trained :class:`~mlpot.models.potential.Potential` saved to disk and loaded back.

A model file is written by :func:`torch.save` and contains one dict of plain Python values and CPU
tensors, never a pickled module or class:

- ``format`` (``"mlpot-model"``), ``format_version`` (int) and ``mlpot_version`` (str);
- ``config``: the :class:`~mlpot.config.ModelConfig` as a dict, with ``dtype`` set to the dtype of
  the saved weights;
- ``state_dict``: the weights; ``dtype``: their floating-point type, ``"float32"`` or ``"float64"``;
- ``elements``, ``reference_energies`` (eV), ``energy_scale`` (eV), ``avg_num_neighbours`` and
  ``cutoff`` (Å): the constructor arguments of the potential;
- ``units``: :data:`mlpot.keys.UNITS`, the units of every prediction;
- ``statistics`` (the :class:`~mlpot.models.statistics.Statistics` as a dict, or None) and
  ``metadata`` (a dict of JSON-like values that the caller chooses);
- ``checksum``: SHA-256 of everything else, because the zip container of :func:`torch.save`
  does not notice a changed byte inside a tensor.

:func:`load_model` reads the file with ``torch.load(weights_only=True)``, which rejects any
pickled object other than containers, numbers, strings and tensors, so loading a file cannot run
code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mlpot import __version__, keys
from mlpot.config import config_from_dict
from mlpot.errors import ConfigError, ModelFileError
from mlpot.fileio import load_failure_reason, rejected_object
from mlpot.models.potential import DTYPES, Potential
from mlpot.models.statistics import Statistics

#: Value of the ``format`` entry that marks an mlpot model file.
FORMAT_NAME = "mlpot-model"
#: Newest model-file format this version writes and reads. Raise it when the layout changes.
FORMAT_VERSION = 1

_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def save_model(
    potential: Potential,
    path: str | Path,
    statistics: Statistics | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``potential`` to ``path`` as a model file and return the path.

    The file is written to a temporary file in the same folder, flushed to disk and renamed over
    ``path``, so a reader never sees a half-written file and a crash leaves any old file intact.

    Args:
        potential: the model to save, on any device.
        path: destination file; missing parent folders are created.
        statistics: the training statistics the potential was built from, stored for reference.
        metadata: extra JSON-like values (str, int, float, bool, None, lists, dicts with string
            keys), such as the training config or final errors.

    Raises:
        ValueError: ``statistics`` describe other elements than the potential has, or
            ``metadata`` contains a value that is not JSON-like.
    """
    path = Path(path)
    if statistics is not None and [int(z) for z in statistics.elements] != potential.elements:
        raise ValueError(
            f"the statistics cover elements {statistics.elements}, but the potential has {potential.elements}"
        )
    metadata = dict(metadata or {})
    _check_plain(metadata, "metadata")

    dtype_name = _DTYPE_NAMES.get(potential.dtype)
    if dtype_name is None:
        raise ValueError(f"cannot save a potential with weights of dtype {potential.dtype}; use float32 or float64")
    config = dataclasses.asdict(potential.config)
    config["dtype"] = dtype_name

    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mlpot_version": __version__,
        "config": config,
        "state_dict": {name: tensor.detach().cpu().clone() for name, tensor in potential.state_dict().items()},
        "dtype": dtype_name,
        "elements": list(potential.elements),
        "reference_energies": [float(value) for value in potential.reference_energies],
        "energy_scale": float(potential.energy_scale),
        "avg_num_neighbours": float(potential.avg_num_neighbours),
        "cutoff": float(potential.cutoff),
        "units": dict(keys.UNITS),
        "statistics": statistics.to_dict() if statistics is not None else None,
        "metadata": metadata,
    }
    payload["checksum"] = _checksum(payload)
    _write_atomically(payload, path)
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Potential:
    """Load a model file written by :func:`save_model`, whatever device it was trained on.

    Returns the potential in eval mode, with the saved dtype, on ``device``.

    Raises:
        ModelFileError: the file is missing, truncated, corrupted, not an mlpot model file,
            written by a newer mlpot, or contains pickled Python objects.
    """
    path = Path(path)
    payload = read_model_file(path)
    try:
        config = config_from_dict({"model": payload["config"]}, where=f"{path}, model config").model
    except ConfigError as error:
        raise ModelFileError(f"{path}: the stored model config is invalid: {error}") from error
    potential = Potential(
        config,
        elements=payload["elements"],
        reference_energies=payload["reference_energies"],
        energy_scale=payload["energy_scale"],
        avg_num_neighbours=payload["avg_num_neighbours"],
    )
    try:
        potential.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise ModelFileError(f"{path}: the stored weights do not fit the model built from its config: {error}") from error
    potential.to(device=device, dtype=DTYPES[payload["dtype"]])
    return potential.eval()


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Read and check a model file and return its dict (see the module docstring) with CPU tensors.

    Raises:
        ModelFileError: as :func:`load_model`.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} not found")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file; give the path of a model file such as model.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and pickle raise many unrelated types for bad files.
        raise ModelFileError(_load_failure_message(path, error)) from error

    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        hint = ""
        if isinstance(payload, dict) and "pytorch-lightning_version" in payload:
            hint = "; it is a training checkpoint, so load the model.pt of its run folder instead"
        raise ModelFileError(f"{path} is not an mlpot model file (it has no 'format': {FORMAT_NAME!r} entry){hint}")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: invalid model-file format version {version!r}; the file is corrupted")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model-file format version {version}, written by mlpot {payload.get('mlpot_version', '?')}, "
            f"but mlpot {__version__} reads versions up to {FORMAT_VERSION}; upgrade mlpot to load it"
        )
    _check_fields(payload, path)
    try:
        checksum = _checksum(payload)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the model file contains entries that are not JSON-like ({error})") from error
    if payload["checksum"] != checksum:
        raise ModelFileError(f"{path}: checksum mismatch, so the file is corrupted; use another copy of the model")
    return payload


def _load_failure_message(path: Path, error: Exception) -> str:
    # torch's message starts with advice to load with weights_only=False, which would run the
    # file's code, so only the line that gives the reason is kept.
    detail = rejected_object(error)
    if detail is not None:
        return (
            f"{path} was rejected: it contains pickled Python objects that a model file never holds "
            f"({detail}). Nothing in it was run. Load only model files written by mlpot.save_model"
        )
    return (
        f"{path} could not be read as a model file ({load_failure_reason(error)}); "
        "the file is truncated, corrupted or not an mlpot model"
    )


#: Entries every model file of format version 1 has, with their type.
_FIELD_TYPES = {
    "config": dict,
    "state_dict": dict,
    "dtype": str,
    "elements": list,
    "reference_energies": list,
    "energy_scale": float,
    "avg_num_neighbours": float,
    "cutoff": float,
    "units": dict,
    "metadata": dict,
    "checksum": str,
}


def _check_fields(payload: dict, path: Path) -> None:
    """Raise ModelFileError when an entry is missing or has the wrong type or value."""
    for name, expected in _FIELD_TYPES.items():
        if name not in payload:
            raise ModelFileError(f"{path}: the model file has no {name!r} entry; the file is corrupted")
        if not isinstance(payload[name], expected):
            raise ModelFileError(
                f"{path}: entry {name!r} is a {type(payload[name]).__name__}, expected {expected.__name__}; "
                "the file is corrupted"
            )
    if payload["dtype"] not in DTYPES:
        raise ModelFileError(f"{path}: unknown dtype {payload['dtype']!r}; expected one of {sorted(DTYPES)}")
    if not all(isinstance(tensor, torch.Tensor) for tensor in payload["state_dict"].values()):
        raise ModelFileError(f"{path}: the state dict contains values that are not tensors; the file is corrupted")
    elements, references = payload["elements"], payload["reference_energies"]
    if len(elements) != len(references):
        raise ModelFileError(f"{path}: {len(elements)} elements but {len(references)} reference energies")
    if not all(isinstance(z, int) and 1 <= z <= 118 for z in elements):
        raise ModelFileError(f"{path}: invalid element list {elements}")
    # Only shared names are compared, so that a prediction added to UNITS later keeps old files valid.
    for name in sorted(set(payload["units"]) & set(keys.UNITS)):
        if payload["units"][name] != keys.UNITS[name]:
            raise ModelFileError(
                f"{path}: the model predicts {name} in {payload['units'][name]}, but this mlpot uses "
                f"{keys.UNITS[name]}; load the file with the mlpot version that wrote it"
            )


def _checksum(payload: dict) -> str:
    """SHA-256 of the plain entries (as sorted JSON) and of each tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    plain = {name: value for name, value in payload.items() if name not in ("state_dict", "checksum")}
    digest.update(json.dumps(plain, sort_keys=True).encode())
    for name in sorted(payload.get("state_dict", {})):
        tensor = payload["state_dict"][name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_plain(value: Any, where: str) -> None:
    """Raise ValueError unless ``value`` is built from JSON-like types only."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}; model-file metadata must be finite")
        return
    if isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            _check_plain(item, f"{where}[{position}]")
        return
    if isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str):
                raise ValueError(f"{where} has the key {name!r}; model-file metadata keys must be strings")
            _check_plain(item, f"{where}[{name!r}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}; model-file metadata may only contain str, int, float, bool, "
        "None, lists and dicts"
    )


def _write_atomically(payload: dict, path: Path) -> None:
    """Save ``payload`` to a temporary file next to ``path``, fsync it and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new name opened with "xb" gets the usual permissions from the umask, unlike mkstemp's 0600.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    # Flush the rename too; some platforms cannot open a folder, and the file is safe without it.
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
