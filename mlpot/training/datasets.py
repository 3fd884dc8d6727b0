"""The structures of a training run: training, validation and test splits, and isolated atoms.

The elements of the model are those of the training split and of the isolated-atom file. The
validation and test structures are checked against them as they are read, so that an element
the model cannot learn stops the run before training rather than after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mlpot import keys
from mlpot.config import Config, DataConfig, resolve_data_path
from mlpot.data.datamodule import split_indices
from mlpot.data.io import read_structures
from mlpot.data.labels import LabelSpec, Structure
from mlpot.data.validation import symbol
from mlpot.errors import ConfigError, DataError, ElementError, MissingLabelError


def label_spec(config: Config) -> LabelSpec:
    """Label names and units of the data section."""
    names = {item.name for item in dataclasses.fields(LabelSpec)}
    return LabelSpec(**{name: getattr(config.data, name) for name in names})


def read_splits(
    config: Config,
) -> tuple[list[Structure], list[Structure], list[Structure] | None, list[Structure] | None]:
    """Read the training, validation, test and isolated-atom structures of the data section.

    Returns (train, valid, test, isolated); test and isolated are None when their file is not set.

    Raises:
        DataError: a file is unreadable or a structure invalid (see :func:`read_structures`).
        ElementError: a validation or test structure contains an element that is in neither the
            training split nor the isolated-atom file. The message names the file, frame and element.
    """
    data = config.data
    labels = tuple(data.labels)
    spec = label_spec(config)
    train = read_structures(resolve_data_path(data.train_file), labels, spec)
    held_out = None
    if not data.valid_file:
        if len(train) < 2:
            raise ConfigError(f"{data.train_file} has {len(train)} structure; set valid_file, since there is none to hold out")
        train_indices, valid_indices = split_indices(len(train), data.valid_fraction, config.training.seed)
        train, held_out = [train[i] for i in train_indices], [train[i] for i in valid_indices]
    isolated = read_isolated_atoms(data) if data.isolated_atoms_file else None
    elements = sorted({int(z) for structure in [*train, *(isolated or [])] for z in structure.atoms.numbers})

    if held_out is not None:
        valid = held_out
        _check_elements(valid, elements, "the structures held out for validation", "set valid_file, or another seed")
    else:
        valid = read_structures(resolve_data_path(data.valid_file), labels, spec)
        _check_elements(valid, elements, "valid_file", f"remove these structures from {data.valid_file}")
    test = None
    if data.test_file:
        test = read_structures(resolve_data_path(data.test_file), labels, spec)
        _check_elements(test, elements, "test_file", f"remove these structures from {data.test_file}")
    return train, valid, test, isolated


def read_isolated_atoms(data: DataConfig) -> list[Structure]:
    """Read the one-atom structures of ``isolated_atoms_file`` with their energies in eV.

    The isolated-atom file often comes from elsewhere than the training data, such as an eV
    extxyz file beside rMD17's kcal/mol npz, so ``energy_unit`` does not apply to it: its unit is
    ``isolated_atoms_energy_unit``. Its energy key is ``isolated_atoms_energy_key``, or
    ``energy_key`` when that is empty.
    """
    key = data.isolated_atoms_energy_key or data.energy_key
    spec = LabelSpec(energy_key=key, energy_unit=data.isolated_atoms_energy_unit)
    try:
        return read_structures(resolve_data_path(data.isolated_atoms_file), (keys.ENERGY,), spec)
    except MissingLabelError as error:
        source = "isolated_atoms_energy_key" if data.isolated_atoms_energy_key else "energy_key, as isolated_atoms_energy_key is empty"
        raise DataError(
            f"{error.where}: the isolated-atom energy {key!r} (from {source}) is missing; this frame has "
            f"{error.available}. Set isolated_atoms_energy_key to the name of the energy in {data.isolated_atoms_file}"
        ) from None


def _check_elements(structures: Sequence[Structure], elements: list[int], origin: str, fix: str) -> None:
    """Raise ElementError for the first structure with an element outside ``elements``."""
    known = set(elements)
    for structure in structures:
        unknown = sorted({int(z) for z in structure.atoms.numbers} - known)
        if unknown:
            names = ", ".join(symbol(z) for z in unknown)
            raise ElementError(
                f"{structure.where}: element {names} of {origin} is in no structure of the training split and "
                f"not in isolated_atoms_file, so the model cannot learn it (its elements: "
                f"{', '.join(symbol(z) for z in elements)}). Add training structures that contain {names}, or {fix}"
            )
