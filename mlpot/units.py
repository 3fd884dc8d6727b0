"""Conversions from the units of input files to mlpot's units.

mlpot works in Å, eV, eV/Å (forces), eV/Å³ (stress), e·Å (dipoles) and e (charges). A unit is
given as a string such as ``"kcal/mol"``, ``"Hartree/Bohr"``, ``"kbar"`` or ``"Debye"``;
:func:`factor_to_internal` returns the number that multiplies a value in that unit to give it in
mlpot's unit. Constants come from :mod:`ase.units` (CODATA 2014 in ASE 3.23).
"""

from __future__ import annotations

import re

from ase import units as ase_units

from mlpot.errors import UnitError

#: mlpot's unit for each quantity.
INTERNAL_UNITS = {
    "energy": "eV",
    "length": "Å",
    "forces": "eV/Å",
    "stress": "eV/Å³",
    "dipole": "e·Å",
    "charge": "e",
}

# Energy units in eV.
_ENERGY = {
    "ev": 1.0,
    "mev": 1e-3,
    "hartree": ase_units.Hartree,
    "ha": ase_units.Hartree,
    "eh": ase_units.Hartree,
    "rydberg": ase_units.Rydberg,
    "ry": ase_units.Rydberg,
    "kcal/mol": ase_units.kcal / ase_units.mol,
    "kj/mol": ase_units.kJ / ase_units.mol,
}

# Length units in Å.
_LENGTH = {
    "å": 1.0,
    "a": 1.0,
    "ang": 1.0,
    "angstrom": 1.0,
    "bohr": ase_units.Bohr,
    "a0": ase_units.Bohr,
    "nm": 10.0,
    "pm": 0.01,
}

# Pressure units in eV/Å³.
_PRESSURE = {
    "pa": ase_units.Pascal,
    "bar": 1e5 * ase_units.Pascal,
    "kbar": 1e8 * ase_units.Pascal,
    "mpa": 1e6 * ase_units.Pascal,
    "gpa": ase_units.GPa,
}

# Dipole units in e·Å. One Debye is 1e-21 / c C·m.
_DIPOLE = {
    "debye": ase_units.Debye,
    "d": ase_units.Debye,
}

# Charge units in e.
_CHARGE = {"e": 1.0}


# Unit names are matched without case, except where case is the SI prefix: "meV" is milli and
# "MeV" mega, "MPa" is mega and "mPa" milli. Neither mega-electronvolts nor millipascals have an
# entry, so these spellings are rejected instead of read with the wrong prefix.
_WRONG_PREFIX = re.compile(r"(?<![A-Za-z])(M[eE][vV]|m[pP][aA])(?![A-Za-z])")


def _normalise(unit: str) -> str:
    text = unit.strip().lower()
    text = text.replace("angstrom", "å").replace("ang", "å")
    text = text.replace("·", "*").replace(" ", "")
    text = text.replace("^3", "3").replace("**3", "3").replace("³", "3")
    return text


def _length(name: str, unit: str, quantity: str) -> float:
    key = name if name in _LENGTH else name.replace("å", "a")
    if key not in _LENGTH:
        raise _unknown(unit, quantity)
    return _LENGTH[key]


def _energy(name: str, unit: str, quantity: str) -> float:
    if name not in _ENERGY:
        raise _unknown(unit, quantity)
    return _ENERGY[name]


def _split_energy_per_length(text: str, unit: str, quantity: str, power: int) -> float:
    # "kcal/mol/å" and "hartree/bohr3" split at the last "/": energy unit, then length unit.
    if "/" not in text:
        raise _unknown(unit, quantity)
    energy_part, length_part = text.rsplit("/", 1)
    if power == 3:
        if not length_part.endswith("3"):
            raise _unknown(unit, quantity)
        length_part = length_part[:-1]
    return _energy(energy_part, unit, quantity) / _length(length_part, unit, quantity) ** power


def _unknown(unit: str, quantity: str) -> UnitError:
    examples = {
        "energy": "eV, meV, Hartree, Rydberg, kcal/mol, kJ/mol",
        "length": "Å (or Angstrom), Bohr, nm, pm",
        "forces": "eV/Å, meV/Å, Hartree/Bohr, kcal/mol/Å, kJ/mol/Å",
        "stress": "eV/Å^3, Hartree/Bohr^3, GPa, kbar, bar, Pa",
        "dipole": "e·Å (or e*Ang), e*Bohr, Debye",
        "charge": "e",
    }[quantity]
    return UnitError(f"unknown {quantity} unit {unit!r}; use one of: {examples}")


def factor_to_internal(unit: str, quantity: str) -> float:
    """Return the factor that converts a value of ``quantity`` from ``unit`` to mlpot's unit.

    ``quantity`` is one of ``energy``, ``length``, ``forces``, ``stress``, ``dipole`` or
    ``charge``. Raises :class:`~mlpot.errors.UnitError` for an unknown unit or quantity.
    """
    if quantity not in INTERNAL_UNITS:
        raise UnitError(f"unknown quantity {quantity!r}; expected one of {sorted(INTERNAL_UNITS)}")
    if not isinstance(unit, str) or not unit.strip():
        raise _unknown(str(unit), quantity)
    wrong_prefix = _WRONG_PREFIX.search(unit)
    if wrong_prefix:
        if wrong_prefix.group(1).lower() == "mev":
            rejected, advice = "mega-electronvolts", "Write meV for milli-electronvolts"
        else:
            rejected, advice = "millipascals", "Write MPa for megapascals"
        raise UnitError(f"unknown {quantity} unit {unit!r}: {rejected} are not supported. {advice}")
    text = _normalise(unit)

    if quantity == "energy":
        return _energy(text, unit, quantity)
    if quantity == "length":
        return _length(text, unit, quantity)
    if quantity == "forces":
        return _split_energy_per_length(text, unit, quantity, power=1)
    if quantity == "stress":
        if text in _PRESSURE:
            return _PRESSURE[text]
        return _split_energy_per_length(text, unit, quantity, power=3)
    if quantity == "charge":
        if text not in _CHARGE:
            raise _unknown(unit, quantity)
        return _CHARGE[text]

    # Dipole: a named unit, or a charge times a length such as "e*Bohr".
    if text in _DIPOLE:
        return _DIPOLE[text]
    match = re.fullmatch(r"e\*?(.+)", text)
    if match is None:
        raise _unknown(unit, quantity)
    return _length(match.group(1), unit, quantity)
