"""Checks that a structure is physically usable before it reaches a model."""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols

from mlpot.data.labels import Structure
from mlpot.data.neighbours import neighbour_list
from mlpot.errors import DataError, ElementError

#: Two atoms closer than this (Å) make a structure invalid: no chemistry happens there, and such
#: pairs usually come from duplicated atoms or a unit error in the positions.
MIN_DISTANCE = 0.1


def symbol(number: int) -> str:
    """Return the chemical symbol of atomic number ``number``, or ``Z=<number>`` if it is not one."""
    if 0 < number < len(chemical_symbols):
        return chemical_symbols[number]
    return f"Z={number}"


def check_elements(numbers: np.ndarray, elements: list[int], where: str) -> None:
    """Raise ElementError naming ``where`` and the element when ``numbers`` has one not in ``elements``."""
    unknown = sorted(set(int(z) for z in np.unique(numbers)) - set(int(z) for z in elements))
    if unknown:
        names = ", ".join(symbol(z) for z in unknown)
        known = ", ".join(symbol(int(z)) for z in elements)
        raise ElementError(
            f"{where}: element {names} is not in the model's element list ({known}); use a model trained on "
            f"data that contain {names}, or leave these structures out"
        )


def validate_structure(structure: Structure, elements: list[int] | None = None) -> None:
    """Raise DataError or ElementError if ``structure`` cannot be used.

    Checks: atomic numbers are valid, positions and a periodic cell are finite, no two atoms (or
    an atom and a periodic image) are closer than :data:`MIN_DISTANCE`, and, when ``elements`` is
    given, every element is in it. Labels were checked when they were read.
    """
    atoms = structure.atoms
    where = structure.where
    numbers = atoms.numbers
    if len(atoms) == 0:
        raise DataError(f"{where}: the structure has no atoms")
    if np.any(numbers < 1) or np.any(numbers >= len(chemical_symbols)):
        raise DataError(f"{where}: invalid atomic numbers {sorted(set(numbers.tolist()))}")
    if not np.all(np.isfinite(atoms.positions)):
        bad = int(np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))[0])
        raise DataError(f"{where}: position of atom {bad} ({symbol(numbers[bad])}) is NaN or infinite")
    if atoms.pbc.any() and not np.all(np.isfinite(atoms.cell.array)):
        raise DataError(f"{where}: the cell contains NaN or infinite values")
    if elements is not None:
        check_elements(numbers, elements, where)

    try:
        edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, MIN_DISTANCE)
    except DataError as error:
        raise DataError(f"{where}: {error}") from error
    if edge_index.shape[1] > 0:
        i, j = (int(k) for k in edge_index[:, 0])
        shift = shifts[0]
        distance = np.linalg.norm(atoms.positions[j] - atoms.positions[i] + shift @ atoms.cell.array)
        image = f" (through a periodic image, cell shift {shift.tolist()})" if shift.any() else ""
        raise DataError(
            f"{where}: atoms {i} ({symbol(numbers[i])}) and {j} ({symbol(numbers[j])}) are {distance:.3g} Å "
            f"apart{image}, closer than {MIN_DISTANCE} Å. Remove duplicated atoms, or check the length unit "
            "and the cell"
        )
