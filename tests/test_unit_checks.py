"""Checks that catch unit and label mistakes in the data section before a training starts.

Covers the energy key and unit of the isolated-atom file, the plausibility warnings of the
statistics, and elements of the validation and test files that the training split lacks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.config import Config
from mlpot.errors import DataError, ElementError
from mlpot.models.statistics import MAX_FORCE_RMS, StatisticsWarning, compute_statistics
from mlpot.training.datasets import read_isolated_atoms, read_splits
from mlpot.training.run import train

REPOSITORY = Path(__file__).resolve().parents[1]
ETHANOL = REPOSITORY / "data" / "ethanol" / "train.xyz"
ETHANOL_ISOLATED = REPOSITORY / "data" / "ethanol" / "isolated_atoms.xyz"
KCAL_PER_MOL = 0.0433641  # eV, to 6 digits


def relabelled(source: Path, destination: Path, key: str, frames: str = ":", scale: float = 1.0) -> Path:
    """Write the frames of ``source`` with their energy (times ``scale``) under ``key`` in atoms.info."""
    structures = ase.io.read(source, index=frames)
    for atoms in structures:
        results = atoms.calc.results
        atoms.calc = None
        atoms.info[key] = results["energy"] * scale
        if "forces" in results:
            atoms.arrays["forces"] = results["forces"] * scale
    ase.io.write(destination, structures)
    return destination


def config_for(train_path: Path, isolated_path: Path | None = None) -> Config:
    config = Config()
    config.data.train_file = str(train_path)
    config.data.valid_fraction = 0.25
    config.data.isolated_atoms_file = str(isolated_path) if isolated_path else None
    return config


# The energy key and unit of the isolated-atom file


def test_isolated_key_follows_energy_key(tmp_path):
    train_path = relabelled(ETHANOL, tmp_path / "train.xyz", "xtb_energy", frames=":8")
    isolated_path = relabelled(ETHANOL_ISOLATED, tmp_path / "isolated.xyz", "xtb_energy")
    config = config_for(train_path, isolated_path)
    config.data.energy_key = "xtb_energy"

    isolated = read_isolated_atoms(config.data)
    expected = [atoms.get_potential_energy() for atoms in ase.io.read(ETHANOL_ISOLATED, index=":")]
    assert [float(structure.labels["energy"]) for structure in isolated] == pytest.approx(expected)


def test_isolated_key_of_its_own(tmp_path):
    train_path = relabelled(ETHANOL, tmp_path / "train.xyz", "xtb_energy", frames=":8")
    config = config_for(train_path, ETHANOL_ISOLATED)
    config.data.energy_key = "xtb_energy"
    config.data.isolated_atoms_energy_key = "energy"

    isolated = read_isolated_atoms(config.data)
    assert len(isolated) == 4


def test_isolated_missing_key_names_option(tmp_path):
    train_path = relabelled(ETHANOL, tmp_path / "train.xyz", "xtb_energy", frames=":8")
    config = config_for(train_path, ETHANOL_ISOLATED)
    config.data.energy_key = "xtb_energy"

    with pytest.raises(DataError) as error:
        read_isolated_atoms(config.data)
    message = str(error.value)
    assert f"{ETHANOL_ISOLATED}, frame 0" in message
    assert "'xtb_energy' (from energy_key, as isolated_atoms_energy_key is empty) is missing" in message
    assert "Set isolated_atoms_energy_key" in message


def test_isolated_unit_stays_separate(tmp_path):
    # Training energies in kcal/mol, isolated atoms in eV: only the training file is converted.
    train_path = relabelled(ETHANOL, tmp_path / "train.xyz", "energy", frames=":8", scale=1 / KCAL_PER_MOL)
    config = config_for(train_path, ETHANOL_ISOLATED)
    config.data.energy_unit = "kcal/mol"

    train_set, _, _, isolated = read_splits(config)
    hydrogen = next(structure for structure in isolated if structure.atoms.numbers[0] == 1)
    assert float(hydrogen.labels["energy"]) == pytest.approx(-13.5684, abs=1e-3)
    assert float(train_set[0].labels["energy"]) == pytest.approx(-4209, abs=5)


# Plausibility warnings of the statistics


def test_undeclared_energy_unit_warns(tmp_path):
    # kcal/mol energies read as eV put each atom hundreds of eV away from its isolated energy.
    train_path = relabelled(ETHANOL, tmp_path / "train.xyz", "energy", frames=":8", scale=1 / KCAL_PER_MOL)
    config = config_for(train_path, ETHANOL_ISOLATED)
    train_set, _, _, isolated = read_splits(config)
    with pytest.warns(StatisticsWarning, match="energy_unit .* isolated_atoms_energy_unit") as record:
        compute_statistics(train_set, 5.0, isolated)
    messages = [str(item.message) for item in record if issubclass(item.category, StatisticsWarning)]
    assert any("(E - ΣE0)/atom" in message for message in messages)


def test_wrong_isolated_unit_warns(tmp_path):
    config = config_for(relabelled(ETHANOL, tmp_path / "train.xyz", "energy", frames=":8"), ETHANOL_ISOLATED)
    config.data.isolated_atoms_energy_unit = "kcal/mol"
    train_set, _, _, isolated = read_splits(config)
    with pytest.warns(StatisticsWarning, match="beyond ±50 eV per atom"):
        compute_statistics(train_set, 5.0, isolated)


def test_undeclared_forces_unit_warns(tmp_path):
    # Forces in kcal/mol/Å read as eV/Å are 23 times too large.
    structures = ase.io.read(ETHANOL, index=":8")
    for atoms in structures:
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces() / KCAL_PER_MOL
        )
    ase.io.write(tmp_path / "train.xyz", structures)
    train_set, _, _, isolated = read_splits(config_for(tmp_path / "train.xyz", ETHANOL_ISOLATED))
    with pytest.warns(StatisticsWarning, match="forces_unit") as record:
        statistics = compute_statistics(train_set, 5.0, isolated)
    assert statistics.energy_scale > MAX_FORCE_RMS
    assert any("RMS of the training force components" in str(item.message) for item in record)


def test_bundled_ethanol_gives_no_unit_warning():
    train_set, _, _, isolated = read_splits(config_for(ETHANOL, ETHANOL_ISOLATED))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compute_statistics(train_set[:50], 5.0, isolated)
    messages = [str(item.message) for item in record if issubclass(item.category, StatisticsWarning)]
    assert not [message for message in messages if "unit" in message]


# Elements of the validation and test files


def molecule_with(symbols: str, energy: float) -> ase.Atoms:
    positions = np.zeros((len(symbols), 3))
    positions[:, 0] = 1.2 * np.arange(len(symbols))
    atoms = ase.Atoms(symbols, positions=positions)
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(symbols), 3)))
    return atoms


@pytest.mark.parametrize("key", ["valid_file", "test_file"])
def test_unknown_element_stops_before_training(tmp_path, key):
    ase.io.write(tmp_path / "train.xyz", ase.io.read(ETHANOL, index=":8"))
    other = [*ase.io.read(ETHANOL, index="8:10"), molecule_with("CNH", -1500.0)]
    ase.io.write(tmp_path / "other.xyz", other)
    config = config_for(tmp_path / "train.xyz")
    config.training.output = str(tmp_path / "run")
    setattr(config.data, key, str(tmp_path / "other.xyz"))

    with pytest.raises(ElementError) as error:
        train(config)
    message = str(error.value)
    assert f"{tmp_path / 'other.xyz'}, frame 2" in message
    assert f"element N of {key}" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_isolated_element_allowed_in_test_file(tmp_path):
    ase.io.write(tmp_path / "train.xyz", ase.io.read(ETHANOL, index=":8"))
    ase.io.write(tmp_path / "test.xyz", [molecule_with("CNH", -1500.0)])
    config = config_for(tmp_path / "train.xyz", ETHANOL_ISOLATED)
    config.data.test_file = str(tmp_path / "test.xyz")

    _, _, test, _ = read_splits(config)
    assert len(test) == 1


def test_element_only_in_held_out_split(tmp_path):
    structures = ase.io.read(ETHANOL, index=":3")
    structures.insert(2, molecule_with("CNH", -1500.0))
    ase.io.write(tmp_path / "train.xyz", structures)
    config = config_for(tmp_path / "train.xyz")
    # With seed 0, the held-out quarter of 4 structures is frame 2, the one with N.
    with pytest.raises(ElementError, match="frame 2: element N of the structures held out for validation"):
        read_splits(config)
