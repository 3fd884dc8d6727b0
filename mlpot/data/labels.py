"""Structures with labels, and where to find each label in an ``ase.Atoms``.

A label named ``energy`` may sit in ``atoms.info``, in ``atoms.arrays`` or in
``atoms.calc.results``: ASE 3.23 and newer move plain ``energy``, ``forces``, ``stress`` and
``dipole`` from an extxyz file into a ``SinglePointCalculator``. :func:`extract_labels` looks in all
three places, converts each label from its declared unit to mlpot's units and checks its shape
and values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ase
import numpy as np

from mlpot import keys
from mlpot.errors import DataError, MissingLabelError, UnitError
from mlpot.units import factor_to_internal


@dataclass
class LabelSpec:
    """Names and units of the labels in a data file.

    The ``*_key`` fields name the entry in ``atoms.info``, ``atoms.arrays`` or the calculator
    results. A unit of ``None`` means the file format's own unit: eV, Å, eV/Å, eV/Å³ and e·Å for
    files read by ASE. npz files carry no units, so every label read from them needs its unit.
    """

    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    dipole_key: str = "dipole"
    charge_key: str = "charge"
    energy_unit: str | None = None
    length_unit: str | None = None
    forces_unit: str | None = None
    stress_unit: str | None = None
    dipole_unit: str | None = None

    def key_of(self, label: str) -> str:
        """Return the file's name for one of :data:`mlpot.keys.LABELS` or ``total_charge``."""
        names = {
            keys.ENERGY: self.energy_key,
            keys.FORCES: self.forces_key,
            keys.STRESS: self.stress_key,
            keys.DIPOLE: self.dipole_key,
            keys.TOTAL_CHARGE: self.charge_key,
        }
        return names[label]

    def unit_of(self, quantity: str) -> str | None:
        """Return the declared unit of ``energy``, ``length``, ``forces``, ``stress`` or ``dipole``.

        Forces and stress without a unit of their own follow a declared energy unit, divided by
        the length unit (Å unless declared) or its cube.
        """
        unit = getattr(self, f"{quantity}_unit")
        if unit is not None or self.energy_unit is None:
            return unit
        length = self.length_unit or "Å"
        if quantity == "forces":
            return f"{self.energy_unit}/{length}"
        if quantity == "stress":
            return f"{self.energy_unit}/{length}^3"
        return None

    def check_units(self) -> None:
        """Raise UnitError for a declared unit that mlpot does not know, before any file is read.

        A unit is otherwise checked only when a label of its quantity is converted.
        """
        for quantity in ("energy", "length", "forces", "stress", "dipole"):
            unit = self.unit_of(quantity)
            if unit is None:
                continue
            try:
                factor_to_internal(unit, quantity)
            except UnitError as error:
                raise UnitError(f"{quantity}_unit: {error}") from None


@dataclass
class Structure:
    """An ``ase.Atoms`` with its labels in mlpot's units, and where it was read from.

    ``labels`` maps names from :data:`mlpot.keys.LABELS` and ``total_charge`` to float64 arrays:
    energy (), forces (n_atoms, 3), stress (3, 3), dipole (3,), total_charge ().
    """

    atoms: ase.Atoms
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"
    index: int = 0

    @property
    def where(self) -> str:
        """Location for error messages: the file and the frame index."""
        return f"{self.source}, frame {self.index}"


#: Physical quantity of each label, as :func:`mlpot.units.factor_to_internal` names it.
LABEL_QUANTITIES = {
    keys.ENERGY: "energy",
    keys.FORCES: "forces",
    keys.STRESS: "stress",
    keys.DIPOLE: "dipole",
}


def find_label(atoms: ase.Atoms, name: str):
    """Return the value stored under ``name`` in info, arrays or calculator results, or None."""
    if name in atoms.info:
        return atoms.info[name]
    if name in atoms.arrays:
        return atoms.arrays[name]
    calc = atoms.calc
    results = getattr(calc, "results", None) if calc is not None else None
    if results and name in results:
        return results[name]
    return None


def _available_names(atoms: ase.Atoms) -> list[str]:
    names = set(atoms.info) | set(atoms.arrays) - {"numbers", "positions"}
    results = getattr(atoms.calc, "results", None) if atoms.calc is not None else None
    if results:
        names |= set(results)
    return sorted(names)


def _stress_matrix(value: np.ndarray, where: str, key: str) -> np.ndarray:
    flat = value.reshape(-1)
    if flat.size == 9:
        return flat.reshape(3, 3)
    if flat.size == 6:
        # Voigt order, as in ASE: xx, yy, zz, yz, xz, xy.
        xx, yy, zz, yz, xz, xy = flat
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise DataError(f"{where}: stress {key!r} has {flat.size} components; expected 6 (Voigt) or 9")


def _as_float_array(value, where: str, key: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: label {key!r} is not numeric ({value!r})") from error


def _convert_label(label: str, value, spec: LabelSpec, default_unit: str | None, n_atoms: int, where: str):
    key = spec.key_of(label)
    array = _as_float_array(value, where, key)

    if label == keys.ENERGY:
        if array.size != 1:
            raise DataError(f"{where}: energy {key!r} has shape {array.shape}; expected a single number")
        array = array.reshape(())
    elif label == keys.FORCES:
        if array.shape != (n_atoms, 3):
            raise DataError(f"{where}: forces {key!r} have shape {array.shape}; expected ({n_atoms}, 3)")
    elif label == keys.STRESS:
        array = _stress_matrix(array, where, key)
    elif label == keys.DIPOLE:
        if array.size != 3:
            raise DataError(f"{where}: dipole {key!r} has shape {array.shape}; expected 3 components")
        array = array.reshape(3)

    unit = spec.unit_of(LABEL_QUANTITIES[label]) or default_unit
    if unit is None:
        raise DataError(
            f"{where}: the unit of {label} is not declared and this format has none; "
            f"set {LABEL_QUANTITIES[label]}_unit (for example 'kcal/mol' for rMD17 energies)"
        )
    if not np.all(np.isfinite(array)):
        raise DataError(f"{where}: label {key!r} contains NaN or infinite values")
    return array * factor_to_internal(unit, LABEL_QUANTITIES[label])


def extract_labels(
    atoms: ase.Atoms,
    requested: tuple[str, ...],
    spec: LabelSpec,
    where: str,
    default_units: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Read the ``requested`` labels of one frame, converted to mlpot's units.

    ``default_units`` maps a quantity to the file format's unit, used where ``spec`` declares
    none. The total charge is always read: from ``spec.charge_key`` when present, else 0.
    Raises :class:`~mlpot.errors.DataError` naming ``where`` and the key when a requested label
    is missing, has the wrong shape, or holds NaN or infinite values.
    """
    default_units = default_units or {}
    labels: dict[str, np.ndarray] = {}
    for label in requested:
        if label not in LABEL_QUANTITIES:
            raise DataError(f"unknown label {label!r}; expected one of {sorted(LABEL_QUANTITIES)}")
        key = spec.key_of(label)
        value = find_label(atoms, key)
        if value is None:
            available = _available_names(atoms)
            raise MissingLabelError(
                f"{where}: label {key!r} ({label}) is missing; this frame has {available}. "
                f"Rename the key with {label}_key, or leave {label} out of the labels to train on",
                label=label,
                key=key,
                where=where,
                available=available,
            )
        default_unit = default_units.get(LABEL_QUANTITIES[label])
        labels[label] = _convert_label(label, value, spec, default_unit, len(atoms), where)

    charge = find_label(atoms, spec.charge_key)
    if charge is None:
        labels[keys.TOTAL_CHARGE] = np.array(0.0)
    else:
        charge_array = _as_float_array(charge, where, spec.charge_key)
        if charge_array.size != 1 or not np.isfinite(charge_array).all():
            raise DataError(f"{where}: total charge {spec.charge_key!r} must be one finite number, got {charge!r}")
        labels[keys.TOTAL_CHARGE] = charge_array.reshape(())
    return labels
