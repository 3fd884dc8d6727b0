"""Tests of the calculator's input checks: overlapping atoms, non-finite input and output, device, dipole head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from test_calculator import make_potential, molecule, random_periodic

from mlpot.calculator import MLPotCalculator
from mlpot.errors import ConfigError, DataError


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run torch on one thread: these graphs are small, and several threads slow down badly on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def potential():
    return make_potential()


# Atoms too close


@pytest.mark.parametrize("skin", [0.0, 1.0])
@pytest.mark.parametrize("distance", [0.0, 0.01, 0.05, 0.099])
def test_close_atoms_raise(potential, skin, distance):
    atoms = molecule()
    direction = np.array([0.6, -0.8, 0.0])
    atoms.positions[4] = atoms.positions[2] + distance * direction
    atoms.calc = MLPotCalculator(potential, skin=skin)
    with pytest.raises(DataError, match="closer than 0.1 Å") as error:
        atoms.get_potential_energy()
    assert "atoms 2 (" in str(error.value)
    assert " and 4 (" in str(error.value)


@pytest.mark.parametrize("skin", [0.0, 1.0])
def test_close_image_raises(potential, skin):
    atoms = random_periodic(seed=3)
    # Atom 1 sits 0.03 Å from the image of atom 0 one cell vector away, and far from atom 0 itself.
    atoms.positions[1] = atoms.positions[0] + atoms.cell[0] + [0.03, 0.0, 0.0]
    atoms.calc = MLPotCalculator(potential, skin=skin)
    with pytest.raises(DataError, match="periodic image"):
        atoms.get_potential_energy()


def test_close_atoms_raise_on_reused_list(potential):
    atoms = molecule()
    direction = np.array([0.0, 0.6, 0.8])
    atoms.positions[4] = atoms.positions[2] + 0.4 * direction
    calculator = MLPotCalculator(potential, skin=1.0)
    atoms.calc = calculator
    atoms.get_potential_energy()
    # A move of 0.35 Å, below skin / 2, keeps the list of the first call.
    atoms.positions[4] = atoms.positions[2] + 0.05 * direction
    with pytest.raises(DataError, match="closer than"):
        atoms.get_potential_energy()
    assert calculator.neighbour_list_builds == 1


def test_distance_check_builds_no_extra_list(potential):
    atoms = molecule()
    calculator = MLPotCalculator(potential, skin=1.0)
    atoms.calc = calculator
    atoms.get_potential_energy()
    atoms.positions[0] += [0.05, 0.0, 0.0]
    atoms.get_potential_energy()
    assert calculator.neighbour_list_builds == 1


def test_spread_atoms_pass(potential):
    atoms = molecule()
    atoms.positions[4] = atoms.positions[2] + [0.0, 0.0, 0.11]
    atoms.calc = MLPotCalculator(potential)
    assert np.isfinite(atoms.get_potential_energy())


# Non-finite input and output


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_position_names_atom(potential, value):
    atoms = molecule()
    atoms.positions[5, 1] = value
    atoms.calc = MLPotCalculator(potential)
    with pytest.raises(DataError, match="position of atom 5"):
        atoms.get_forces()


def test_non_finite_cell_raises(potential):
    atoms = random_periodic(seed=1)
    cell = atoms.cell.array.copy()
    cell[2, 2] = np.inf
    atoms.set_cell(cell)
    atoms.calc = MLPotCalculator(potential)
    with pytest.raises(DataError, match="cell contains NaN or infinite"):
        atoms.get_potential_energy()


def test_far_coordinates_raise_in_float32():
    atoms = molecule()
    atoms.positions += 1e9
    atoms.calc = MLPotCalculator(make_potential(dtype="float32"))
    with pytest.raises(DataError, match="NaN or infinite energy") as error:
        atoms.get_potential_energy()
    assert "1e+09 Å" in str(error.value)
    assert "float64" in str(error.value)


def test_nan_weights_raise(potential):
    calculator = MLPotCalculator(potential)
    with torch.no_grad():
        next(calculator.model.energy_model.parameters()).fill_(float("nan"))
    atoms = molecule()
    atoms.calc = calculator
    with pytest.raises(DataError, match="the model returned NaN or infinite") as error:
        atoms.get_forces()
    assert "forces" in str(error.value)
    assert calculator.results == {}


# Device


@pytest.mark.parametrize("device", ["cdua", "cuda:x", "gpu"])
def test_invalid_device_raises(potential, device):
    with pytest.raises(ConfigError, match=f"device '{device}'") as error:
        MLPotCalculator(potential, device=device)
    assert "cpu" in str(error.value)


def test_cuda_without_gpu_raises(potential, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda'") as error:
        MLPotCalculator(potential, device="cuda")
    assert "use cpu" in str(error.value)


def test_missing_gpu_index_raises(potential, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="cuda:0 to cuda:1"):
        MLPotCalculator(potential, device="cuda:2")


# Dipole head


@pytest.mark.parametrize("method", ["get_dipole_moment", "get_charges"])
def test_missing_dipole_head_explains(potential, method):
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    with pytest.raises(PropertyNotImplementedError, match="no dipole head") as error:
        getattr(atoms, method)()
    assert "dipole: true" in str(error.value)
