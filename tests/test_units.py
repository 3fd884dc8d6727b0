"""Unit conversions into mlpot's units (Å, eV, eV/Å, eV/Å³, e·Å), against published constants."""

from __future__ import annotations

import pytest

from mlpot.errors import UnitError
from mlpot.units import INTERNAL_UNITS, factor_to_internal

# Reference values from CODATA 2014, the set that ase.units uses, to 7 or more digits:
# 1 Hartree = 27.21138602 eV, 1 Bohr = 0.52917721067 Å, 1 kcal/mol = 4.184 kJ/mol =
# 0.0433641 eV, 1 Rydberg = Hartree / 2, 1 Debye = 1e-21/c C·m = 0.2081943 e·Å,
# 1 GPa = 1/160.21766 eV/Å³, 1 kbar = 0.1 GPa, 1 bar = 1e-4 GPa.
HARTREE_EV = 27.21138602
BOHR_ANGSTROM = 0.52917721067
KCAL_PER_MOL_EV = 0.0433641
KJ_PER_MOL_EV = 0.01036427
DEBYE_E_ANGSTROM = 0.2081943
GPA_EV_PER_A3 = 1.0 / 160.21766

CASES = [
    ("eV", "energy", 1.0),
    ("meV", "energy", 1e-3),
    ("Hartree", "energy", HARTREE_EV),
    ("Ha", "energy", HARTREE_EV),
    ("Rydberg", "energy", HARTREE_EV / 2),
    ("kcal/mol", "energy", KCAL_PER_MOL_EV),
    ("kJ/mol", "energy", KJ_PER_MOL_EV),
    ("Å", "length", 1.0),
    ("Angstrom", "length", 1.0),
    ("Bohr", "length", BOHR_ANGSTROM),
    ("nm", "length", 10.0),
    ("eV/Å", "forces", 1.0),
    ("eV/Ang", "forces", 1.0),
    ("Hartree/Bohr", "forces", HARTREE_EV / BOHR_ANGSTROM),
    ("kcal/mol/Å", "forces", KCAL_PER_MOL_EV),
    ("kcal/mol/Bohr", "forces", KCAL_PER_MOL_EV / BOHR_ANGSTROM),
    ("eV/Å^3", "stress", 1.0),
    ("eV/Å³", "stress", 1.0),
    ("Hartree/Bohr^3", "stress", HARTREE_EV / BOHR_ANGSTROM**3),
    ("GPa", "stress", GPA_EV_PER_A3),
    ("kbar", "stress", 0.1 * GPA_EV_PER_A3),
    ("bar", "stress", 1e-4 * GPA_EV_PER_A3),
    ("Debye", "dipole", DEBYE_E_ANGSTROM),
    ("e·Å", "dipole", 1.0),
    ("e*Bohr", "dipole", BOHR_ANGSTROM),
    ("e", "charge", 1.0),
]


@pytest.mark.parametrize(("unit", "quantity", "expected"), CASES)
def test_factor_known_values(unit, quantity, expected):
    assert factor_to_internal(unit, quantity) == pytest.approx(expected, rel=2e-6)


def test_internal_units_are_one():
    for quantity, unit in INTERNAL_UNITS.items():
        assert factor_to_internal(unit, quantity) == 1.0, quantity


def test_kbar_is_tenth_of_gpa():
    assert factor_to_internal("kbar", "stress") == pytest.approx(0.1 * factor_to_internal("GPa", "stress"), rel=1e-12)


def test_case_and_spaces_ignored():
    assert factor_to_internal(" KCAL/MOL ", "energy") == factor_to_internal("kcal/mol", "energy")


@pytest.mark.parametrize(
    ("unit", "quantity"),
    [
        ("furlong", "length"),
        ("GPa", "energy"),
        ("eV", "forces"),
        ("kcal/mol", "forces"),
        ("eV/Å", "stress"),
        ("Debye", "energy"),
        ("", "energy"),
    ],
)
def test_unknown_unit_raises(unit, quantity):
    with pytest.raises(UnitError, match=quantity):
        factor_to_internal(unit, quantity)


@pytest.mark.parametrize(("unit", "quantity"), [("MeV", "energy"), ("MeV/Å", "forces"), ("mPa", "stress")])
def test_wrong_prefix_case_raises(unit, quantity):
    with pytest.raises(UnitError, match="not supported"):
        factor_to_internal(unit, quantity)


@pytest.mark.parametrize(
    ("unit", "quantity", "named", "unrelated"),
    [
        ("MeV", "energy", "mega-electronvolts", "pascals"),
        ("MeV/Å", "forces", "mega-electronvolts", "pascals"),
        ("MeV/Å^3", "stress", "mega-electronvolts", "pascals"),
        ("mPa", "stress", "millipascals", "electronvolts"),
    ],
)
def test_wrong_prefix_names_only_its_unit(unit, quantity, named, unrelated):
    with pytest.raises(UnitError) as error:
        factor_to_internal(unit, quantity)
    assert named in str(error.value)
    assert unrelated not in str(error.value)


def test_unknown_quantity_raises():
    with pytest.raises(UnitError, match="quantity"):
        factor_to_internal("eV", "temperature")


def test_error_lists_known_units():
    with pytest.raises(UnitError, match="kcal/mol"):
        factor_to_internal("kcal", "energy")
