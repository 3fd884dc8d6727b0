"""Finding labels in an ase.Atoms, converting their units and rejecting bad values."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot import keys
from mlpot.data.labels import LabelSpec, extract_labels, find_label
from mlpot.errors import DataError
from mlpot.units import factor_to_internal

ASE_UNITS = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3", "dipole": "e·Å"}
WHERE = "water.xyz, frame 3"


def water(seed: int = 0) -> ase.Atoms:
    rng = np.random.default_rng(seed)
    positions = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    return ase.Atoms("OH2", positions=positions + rng.normal(scale=0.01, size=(3, 3)))


def random_labels(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    stress = rng.normal(size=(3, 3))
    return {
        "energy": rng.normal(),
        "forces": rng.normal(size=(3, 3)),
        "stress": stress + stress.T,
        "dipole": rng.normal(size=3),
    }


def extract(atoms, labels=(keys.ENERGY, keys.FORCES), spec=None):
    return extract_labels(atoms, tuple(labels), spec or LabelSpec(), WHERE, ASE_UNITS)


def test_energy_from_info():
    atoms = water()
    atoms.info["energy"] = -12.5
    assert extract(atoms, [keys.ENERGY])[keys.ENERGY] == -12.5


def test_forces_from_arrays():
    atoms = water()
    forces = random_labels()["forces"]
    atoms.arrays["forces"] = forces
    np.testing.assert_array_equal(extract(atoms, [keys.FORCES])[keys.FORCES], forces)


def test_labels_from_calculator():
    atoms = water()
    values = random_labels()
    atoms.calc = SinglePointCalculator(atoms, energy=values["energy"], forces=values["forces"])
    labels = extract(atoms)
    assert labels[keys.ENERGY] == values["energy"]
    np.testing.assert_array_equal(labels[keys.FORCES], values["forces"])


def test_custom_keys():
    atoms = water()
    values = random_labels()
    atoms.info["REF_energy"] = values["energy"]
    atoms.arrays["REF_forces"] = values["forces"]
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((3, 3)))
    labels = extract(atoms, spec=LabelSpec(energy_key="REF_energy", forces_key="REF_forces"))
    assert labels[keys.ENERGY] == values["energy"]
    np.testing.assert_array_equal(labels[keys.FORCES], values["forces"])


def test_find_label_absent_is_none():
    assert find_label(water(), "energy") is None


def test_missing_label_names_where_and_key():
    atoms = water()
    atoms.info["energy"] = 1.0
    with pytest.raises(DataError, match=r"water\.xyz, frame 3: label 'REF_forces' \(forces\) is missing"):
        extract(atoms, spec=LabelSpec(forces_key="REF_forces"))


def test_missing_energy_never_zero():
    atoms = water()
    atoms.calc = SinglePointCalculator(atoms, forces=np.zeros((3, 3)))
    with pytest.raises(DataError, match="'energy'"):
        extract(atoms)


def test_total_charge_defaults_to_zero():
    labels = extract(water(), labels=[])
    assert labels[keys.TOTAL_CHARGE] == 0.0


def test_total_charge_read():
    atoms = water()
    atoms.info["charge"] = -1
    assert extract(atoms, labels=[])[keys.TOTAL_CHARGE] == -1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_energy_raises(bad):
    atoms = water()
    atoms.info["energy"] = bad
    with pytest.raises(DataError, match=r"water\.xyz, frame 3: label 'energy' contains NaN or infinite"):
        extract(atoms, [keys.ENERGY])


def test_non_finite_forces_raise():
    atoms = water()
    forces = random_labels()["forces"]
    forces[1, 2] = np.nan
    atoms.arrays["forces"] = forces
    with pytest.raises(DataError, match="'forces' contains NaN"):
        extract(atoms, [keys.FORCES])


def test_non_finite_charge_raises():
    atoms = water()
    atoms.info["charge"] = np.nan
    with pytest.raises(DataError, match="total charge 'charge'"):
        extract(atoms, labels=[])


def test_non_numeric_label_raises():
    atoms = water()
    atoms.info["energy"] = "low"
    with pytest.raises(DataError, match="not numeric"):
        extract(atoms, [keys.ENERGY])


@pytest.mark.parametrize(
    ("label", "value"),
    [(keys.ENERGY, np.ones(2)), (keys.FORCES, np.ones((2, 3))), (keys.STRESS, np.ones(4)), (keys.DIPOLE, np.ones(2))],
)
def test_wrong_shape_raises(label, value):
    atoms = water()
    atoms.info[label] = value
    with pytest.raises(DataError, match="water.xyz, frame 3"):
        extract(atoms, [label])


def test_stress_voigt_equals_full():
    stress = random_labels()["stress"]
    voigt = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    full_atoms, voigt_atoms = water(), water()
    full_atoms.info["stress"] = stress.reshape(9)
    voigt_atoms.info["stress"] = voigt
    from_full = extract(full_atoms, [keys.STRESS])[keys.STRESS]
    from_voigt = extract(voigt_atoms, [keys.STRESS])[keys.STRESS]
    np.testing.assert_array_equal(from_full, stress)
    np.testing.assert_array_equal(from_voigt, stress)


def test_stress_from_calculator_voigt():
    atoms = water()
    stress = random_labels()["stress"]
    atoms.calc = SinglePointCalculator(atoms, stress=stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]])
    np.testing.assert_array_equal(extract(atoms, [keys.STRESS])[keys.STRESS], stress)


def test_units_converted():
    atoms = water()
    values = random_labels()
    atoms.info.update(energy=values["energy"], stress=values["stress"], dipole=values["dipole"])
    atoms.arrays["forces"] = values["forces"]
    spec = LabelSpec(energy_unit="Hartree", length_unit="Bohr", stress_unit="kbar", dipole_unit="Debye")
    labels = extract(atoms, keys.LABELS, spec)
    hartree, bohr = factor_to_internal("Hartree", "energy"), factor_to_internal("Bohr", "length")
    assert labels[keys.ENERGY] == pytest.approx(values["energy"] * hartree, rel=1e-12)
    np.testing.assert_allclose(labels[keys.FORCES], values["forces"] * hartree / bohr, rtol=1e-12)
    kbar = 0.1 * factor_to_internal("GPa", "stress")
    np.testing.assert_allclose(labels[keys.STRESS], values["stress"] * kbar, rtol=1e-12)
    np.testing.assert_allclose(labels[keys.DIPOLE], values["dipole"] * factor_to_internal("Debye", "dipole"), rtol=1e-12)


def test_labels_are_float64():
    atoms = water()
    atoms.info["energy"] = np.float32(1.5)
    atoms.arrays["forces"] = random_labels()["forces"].astype(np.float32)
    labels = extract(atoms)
    assert labels[keys.ENERGY].dtype == np.float64
    assert labels[keys.FORCES].dtype == np.float64


def test_forces_unit_follows_energy_and_length():
    spec = LabelSpec(energy_unit="kcal/mol", length_unit="Bohr")
    assert spec.unit_of("forces") == "kcal/mol/Bohr"
    assert spec.unit_of("stress") == "kcal/mol/Bohr^3"


def test_declared_forces_unit_wins():
    spec = LabelSpec(energy_unit="kcal/mol", forces_unit="eV/Å")
    assert spec.unit_of("forces") == "eV/Å"


def test_undeclared_unit_without_default_raises():
    atoms = water()
    atoms.info["energy"] = 1.0
    with pytest.raises(DataError, match="energy_unit"):
        extract_labels(atoms, (keys.ENERGY,), LabelSpec(), WHERE, default_units={})


def test_unknown_label_raises():
    with pytest.raises(DataError, match="unknown label 'charges'"):
        extract(water(), ["charges"])
