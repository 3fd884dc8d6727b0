"""Tests of the training statistics: reference energies, energy scale and neighbour count."""

from __future__ import annotations

import json
import warnings

import ase
import numpy as np
import pytest

from mlpot import keys
from mlpot.config import resolve_data_path
from mlpot.data.labels import Structure
from mlpot.errors import DataError
from mlpot.models.statistics import (
    REFERENCES_FROM_FIT,
    REFERENCES_FROM_ISOLATED_ATOMS,
    SCALE_DEFAULT,
    SCALE_FROM_ENERGY_RESIDUAL,
    SCALE_FROM_FORCES,
    Statistics,
    StatisticsWarning,
    average_num_neighbours,
    compute_statistics,
    read_isolated_atoms,
)

H, C, O, N = 1, 6, 8, 7


def spread_atoms(numbers, rng, spacing=1.5) -> ase.Atoms:
    """Place atoms on a jittered line so that no two overlap."""
    positions = np.zeros((len(numbers), 3))
    positions[:, 0] = spacing * np.arange(len(numbers))
    positions += rng.uniform(-0.2, 0.2, positions.shape)
    return ase.Atoms(numbers=numbers, positions=positions)


def labelled(numbers, rng, energy=None, forces=None) -> Structure:
    labels = {}
    if energy is not None:
        labels[keys.ENERGY] = np.array(energy)
    if forces is not None:
        labels[keys.FORCES] = np.asarray(forces, dtype=float)
    return Structure(atoms=spread_atoms(numbers, rng), labels=labels)


def random_compositions(rng, references: dict[int, float], count: int, noise: float = 0.0) -> list[Structure]:
    """Structures of random composition whose energies are the sum of ``references`` plus noise."""
    structures = []
    elements = sorted(references)
    for _ in range(count):
        numbers = rng.choice(elements, size=int(rng.integers(2, 9)))
        energy = sum(references[int(z)] for z in numbers) + noise * rng.normal()
        structures.append(labelled(numbers, rng, energy=energy))
    return structures


def test_bundled_isolated_atoms():
    path = resolve_data_path("bundled:acetylacetone/isolated_atoms.xyz")
    energies = read_isolated_atoms(path)
    assert sorted(energies) == [H, C, O]
    assert all(value < 0 for value in energies.values())


def test_references_from_isolated_atoms():
    rng = np.random.default_rng(0)
    path = resolve_data_path("bundled:acetylacetone/isolated_atoms.xyz")
    isolated = read_isolated_atoms(path)
    train = [labelled([C, H, O, H], rng, energy=-3000.0, forces=np.ones((4, 3)))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatisticsWarning)
        stats = compute_statistics(train, cutoff=5.0, isolated_atoms=path)
    assert stats.elements == [H, C, O]
    assert stats.reference_energies == [isolated[H], isolated[C], isolated[O]]
    assert stats.reference_source == REFERENCES_FROM_ISOLATED_ATOMS


def test_isolated_atoms_as_structures():
    rng = np.random.default_rng(1)
    isolated = [labelled([O], rng, energy=-2000.0), labelled([H], rng, energy=-13.0)]
    train = [labelled([H, O, H], rng, energy=-2030.0, forces=np.ones((3, 3)))]
    stats = compute_statistics(train, cutoff=3.0, isolated_atoms=isolated)
    assert stats.reference_of() == {H: -13.0, O: -2000.0}


def test_least_squares_recovers_references():
    rng = np.random.default_rng(2)
    references = {H: -13.6, C: -1027.0, O: -2038.0}
    train = random_compositions(rng, references, count=40, noise=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatisticsWarning)
        stats = compute_statistics(train, cutoff=3.0)
    assert stats.elements == [H, C, O]
    assert stats.reference_source == REFERENCES_FROM_FIT
    np.testing.assert_allclose(stats.reference_energies, [references[z] for z in stats.elements], atol=1e-2)


def test_rank_deficient_fit_warns():
    rng = np.random.default_rng(3)
    # Water only: every structure has twice as many H as O, so the counts have rank 1.
    train = []
    for _ in range(10):
        molecules = int(rng.integers(1, 4))
        numbers = [H, H, O] * molecules
        train.append(labelled(numbers, rng, energy=molecules * -2065.0 + 0.01 * rng.normal()))
    with pytest.warns(StatisticsWarning, match="rank 1"):
        stats = compute_statistics(train, cutoff=3.0)
    water = 2 * stats.reference_of()[H] + stats.reference_of()[O]
    assert water == pytest.approx(-2065.0, abs=0.05)


def test_unused_isolated_element_kept():
    rng = np.random.default_rng(4)
    train = [labelled([H, O, H], rng, energy=-2050.0, forces=np.ones((3, 3)))]
    isolated = {H: -13.0, O: -2000.0, N: -1500.0}
    with pytest.warns(StatisticsWarning, match="N"):
        stats = compute_statistics(train, cutoff=3.0, isolated_atoms=isolated)
    assert stats.elements == [H, N, O]
    assert stats.reference_of()[N] == -1500.0


def test_missing_isolated_element_raises():
    rng = np.random.default_rng(5)
    train = [labelled([H, C, H], rng, energy=-1050.0)]
    with pytest.raises(DataError, match="no energy for C"):
        compute_statistics(train, cutoff=3.0, isolated_atoms={H: -13.0})


def test_isolated_structure_with_two_atoms_raises():
    rng = np.random.default_rng(6)
    train = [labelled([H, H], rng, energy=-27.0)]
    isolated = [labelled([H, H], rng, energy=-27.0)]
    with pytest.raises(DataError, match="exactly one atom"):
        compute_statistics(train, cutoff=3.0, isolated_atoms=isolated)


def test_conflicting_isolated_energies_raise():
    rng = np.random.default_rng(7)
    train = [labelled([H, H], rng, energy=-27.0)]
    isolated = [labelled([H], rng, energy=-13.0), labelled([H], rng, energy=-14.0)]
    with pytest.raises(DataError, match="one isolated-atom energy per element"):
        compute_statistics(train, cutoff=3.0, isolated_atoms=isolated)


def test_no_structures_raises():
    with pytest.raises(DataError, match="without training structures"):
        compute_statistics([], cutoff=3.0)


def test_scale_from_forces():
    rng = np.random.default_rng(8)
    train = []
    for count in (3, 5):
        # Every component is ±2 eV/Å, so the RMS is 2 eV/Å whatever the signs.
        forces = 2.0 * rng.choice([-1.0, 1.0], size=(count, 3))
        train.append(labelled([H] * count, rng, energy=-13.0 * count, forces=forces))
    stats = compute_statistics(train, cutoff=3.0, isolated_atoms={H: -13.0})
    assert stats.energy_scale == pytest.approx(2.0)
    assert stats.scale_source == SCALE_FROM_FORCES


def test_scale_from_energy_residual():
    rng = np.random.default_rng(9)
    train = []
    for count, sign in ((2, 1.0), (4, -1.0), (3, 1.0)):
        # Energies 0.5 eV per atom above or below the references.
        train.append(labelled([O] * count, rng, energy=count * (-2000.0 + 0.5 * sign)))
    stats = compute_statistics(train, cutoff=3.0, isolated_atoms={O: -2000.0})
    assert stats.energy_scale == pytest.approx(0.5)
    assert stats.scale_source == SCALE_FROM_ENERGY_RESIDUAL


def test_scale_default_without_variation():
    rng = np.random.default_rng(10)
    train = [labelled([O, O], rng, energy=-4000.0)]
    with pytest.warns(StatisticsWarning, match="1 eV"):
        stats = compute_statistics(train, cutoff=3.0, isolated_atoms={O: -2000.0})
    assert stats.energy_scale == 1.0
    assert stats.scale_source == SCALE_DEFAULT


def test_no_energies_gives_zero_references():
    rng = np.random.default_rng(11)
    train = [labelled([H, O], rng, forces=np.ones((2, 3)))]
    with pytest.warns(StatisticsWarning, match="0 eV"):
        stats = compute_statistics(train, cutoff=3.0)
    assert stats.reference_energies == [0.0, 0.0]


def test_neighbours_of_molecule():
    # A pair 1 Å apart and a third atom 10 Å away: 2 directed edges over 3 atoms.
    atoms = ase.Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [11.0, 0, 0]])
    assert average_num_neighbours([Structure(atoms)], cutoff=3.0) == pytest.approx(2 / 3)


def test_neighbours_of_simple_cubic():
    # One atom in a 2 Å cubic cell: 6 nearest images at 2 Å, the next shell at 2.83 Å.
    atoms = ase.Atoms("Cu", positions=[[0.3, 0.1, 0.2]], cell=np.eye(3) * 2.0, pbc=True)
    assert average_num_neighbours([Structure(atoms)], cutoff=2.1) == pytest.approx(6.0)


def test_neighbours_fall_back_to_one():
    atoms = ase.Atoms("H", positions=[[0, 0, 0]])
    assert average_num_neighbours([Structure(atoms)], cutoff=3.0) == 1.0


def test_dict_round_trip():
    rng = np.random.default_rng(12)
    train = random_compositions(rng, {H: -13.0, O: -2000.0}, count=10, noise=0.1)
    stats = compute_statistics(train, cutoff=3.0)
    values = json.loads(json.dumps(stats.to_dict()))
    assert Statistics.from_dict(values) == stats


def test_from_dict_rejects_unknown_key():
    values = Statistics([H], [-13.0], 1.0, 2.0).to_dict()
    values["colour"] = "red"
    with pytest.raises(ValueError, match="colour"):
        Statistics.from_dict(values)


def test_from_dict_rejects_missing_key():
    values = Statistics([H], [-13.0], 1.0, 2.0).to_dict()
    del values["energy_scale"]
    with pytest.raises(ValueError, match="energy_scale"):
        Statistics.from_dict(values)
