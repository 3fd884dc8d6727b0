"""Tests of the ASE calculator: values, caching, errors, dtypes, dipoles and the neighbour-list skin."""

from __future__ import annotations

import warnings
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

import mlpot
from mlpot import keys
from mlpot.calculator import MLPotCalculator
from mlpot.config import ModelConfig
from mlpot.data.graph import atoms_to_graph
from mlpot.data.neighbours import neighbour_list
from mlpot.errors import ElementError, ModelFileError
from mlpot.models.potential import Potential

DATA = Path(__file__).resolve().parents[1] / "data"
CUTOFF = 4.0
ELEMENTS = [1, 6, 8]
REFERENCES = [-13.5, -1026.8, -2037.8]


def make_potential(dtype: str = "float64", dipole: bool = False, seed: int = 0, model: str = "invariant") -> Potential:
    """Build a small untrained potential for H, C and O whose forces are of order 1 eV/Å."""
    torch.manual_seed(seed)
    config = ModelConfig(
        model=model,
        equivariant_features=4,
        num_features=16,
        radial_hidden=16,
        num_interactions=2,
        lmax=2,
        cutoff=CUTOFF,
        dtype=dtype,
        dipole=dipole,
        dipole_features=4,
        dipole_layers=1,
    )
    return Potential(config, ELEMENTS, REFERENCES, energy_scale=1.0, avg_num_neighbours=8.0)


def molecule() -> ase.Atoms:
    return ase.io.read(DATA / "acetylacetone" / "train_300K.xyz", index=0)


def random_periodic(seed: int, num_atoms: int = 8, length: float = 5.0) -> ase.Atoms:
    """Random H, C, O atoms in a skewed cell, no two (images included) closer than 1 Å."""
    rng = np.random.default_rng(seed)
    cell = length * np.eye(3) + rng.uniform(-0.5, 0.5, (3, 3))
    while True:
        atoms = ase.Atoms(
            numbers=rng.choice(ELEMENTS, num_atoms),
            scaled_positions=rng.uniform(0, 1, (num_atoms, 3)),
            cell=cell,
            pbc=True,
        )
        edges, _ = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 1.0)
        if edges.shape[1] == 0:
            return atoms


def count_calls(calculator: MLPotCalculator) -> list[int]:
    """Return a one-item list that counts the forward calls of the calculator's model."""
    calls = [0]

    def hook(module, inputs, outputs):
        calls[0] += 1

    calculator.model.register_forward_hook(hook)
    return calls


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run torch on one thread: these graphs are small, and several threads slow down badly on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def potential() -> Potential:
    return make_potential()


# Values


def test_energy_matches_potential(potential):
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    expected = potential(atoms_to_graph(atoms, CUTOFF), compute_forces=True)
    assert atoms.get_potential_energy() == pytest.approx(float(expected[keys.ENERGY].detach()[0]), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), expected[keys.FORCES].detach().numpy(), atol=1e-10)


def test_energies_sum_to_energy(potential):
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()


@pytest.mark.parametrize("structure", ["molecule", "periodic"])
def test_forces_match_finite_differences(potential, structure):
    atoms = molecule() if structure == "molecule" else random_periodic(1)
    atoms.calc = MLPotCalculator(potential)
    forces = atoms.get_forces()
    checked = [0, 3, 7]
    numerical = calculate_numerical_forces(atoms, eps=1e-4, iatoms=checked)
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces[checked], numerical, rtol=1e-5, atol=1e-6)


def test_stress_matches_finite_differences(potential):
    atoms = random_periodic(2)
    atoms.calc = MLPotCalculator(potential)
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    assert np.abs(stress).max() > 1e-5
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7)


def test_stress_without_pbc_raises(potential):
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_stress_of_zero_volume_cell_raises(potential):
    atoms = random_periodic(3)
    atoms.pbc = [True, True, False]
    atoms.cell[2] = 0.0
    atoms.calc = MLPotCalculator(potential)
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match="nonzero volume"):
        atoms.get_stress()


# Caching


def test_repeated_requests_reuse_results(potential):
    atoms = random_periodic(4)
    calculator = MLPotCalculator(potential)
    calls = count_calls(calculator)
    atoms.calc = calculator
    for _ in range(2):
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        atoms.get_potential_energies()
    assert calls[0] == 1


def _move_in_place(atoms):
    atoms.positions[0, 0] += 0.01


def _strain_cell(atoms):
    atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=False)


def _drop_periodicity(atoms):
    atoms.pbc = [True, True, False]


def _swap_element(atoms):
    numbers = atoms.numbers.copy()
    numbers[0] = 8 if numbers[0] != 8 else 1
    atoms.numbers = numbers


def _set_info_charge(atoms):
    atoms.info["charge"] = 1.0


def _set_initial_charges(atoms):
    charges = np.zeros(len(atoms))
    charges[0] = -1.0
    atoms.set_initial_charges(charges)


@pytest.mark.parametrize(
    "change",
    [_move_in_place, _strain_cell, _drop_periodicity, _swap_element, _set_info_charge, _set_initial_charges],
)
def test_change_recomputes(potential, change):
    atoms = random_periodic(5)
    calculator = MLPotCalculator(potential)
    calls = count_calls(calculator)
    atoms.calc = calculator
    atoms.get_potential_energy()
    change(atoms)
    atoms.get_potential_energy()
    atoms.get_forces()
    assert calls[0] == 2


def test_in_place_edit_changes_forces(potential):
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    before = atoms.get_forces()
    atoms.positions[0] += 0.05
    after = atoms.get_forces()
    expected = potential(atoms_to_graph(atoms, CUTOFF), compute_forces=True)[keys.FORCES].detach().numpy()
    assert np.abs(after - before).max() > 1e-6
    np.testing.assert_allclose(after, expected, atol=1e-10)


# Errors and dtypes


def test_unknown_element_names_it(potential):
    atoms = molecule()
    atoms.numbers[3] = 26
    atoms.calc = MLPotCalculator(potential)
    with pytest.raises(ElementError, match="Fe"):
        atoms.get_potential_energy()


def test_invalid_skin_raises(potential):
    with pytest.raises(ValueError, match="skin"):
        MLPotCalculator(potential, skin=-1.0)


def test_invalid_dtype_raises(potential):
    with pytest.raises(ValueError, match="float16"):
        MLPotCalculator(potential, dtype="float16")


def test_other_dtype_warns():
    potential = make_potential(dtype="float32")
    with pytest.warns(UserWarning, match="trained in float32 but is evaluated in float64"):
        calculator = MLPotCalculator(potential, dtype="float64")
    assert calculator.model.dtype == torch.float64


def test_training_dtype_is_silent():
    potential = make_potential(dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calculator = MLPotCalculator(potential)
    assert calculator.model.dtype == torch.float32


def test_float32_close_to_float64():
    potential = make_potential(dtype="float32")
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    forces32 = atoms.get_forces()
    with pytest.warns(UserWarning):
        atoms.calc = MLPotCalculator(potential, dtype=torch.float64)
    np.testing.assert_allclose(forces32, atoms.get_forces(), atol=1e-4)


def test_calculator_copies_potential(potential):
    calculator = MLPotCalculator(potential)
    assert calculator.model is not potential
    assert all(parameter.requires_grad for parameter in potential.parameters())


# Dipoles


def test_dipole_absent_without_head(potential):
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    assert "dipole" not in atoms.calc.implemented_properties
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_dipole_moment()


@pytest.mark.parametrize("charge", [0.0, 1.0])
def test_charges_sum_to_total_charge(charge):
    atoms = molecule()
    atoms.info["charge"] = charge
    atoms.calc = MLPotCalculator(make_potential(dipole=True))
    assert atoms.get_charges().sum() == pytest.approx(charge, abs=1e-10)


def test_dipole_matches_potential():
    potential = make_potential(dipole=True)
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    expected = potential(atoms_to_graph(atoms, CUTOFF), compute_forces=False)[keys.DIPOLE][0].detach().numpy()
    dipole = atoms.get_dipole_moment()
    assert dipole.shape == (3,)
    assert np.abs(dipole).max() > 0.0
    np.testing.assert_allclose(dipole, expected, atol=1e-10)


def test_initial_charges_set_total_charge():
    atoms = molecule()
    charges = np.zeros(len(atoms))
    charges[:2] = [0.5, 0.5]
    atoms.set_initial_charges(charges)
    atoms.calc = MLPotCalculator(make_potential(dipole=True))
    assert atoms.get_charges().sum() == pytest.approx(1.0, abs=1e-10)


# Model files


def test_model_file_loads(potential, tmp_path):
    from mlpot.models.io import save_model

    path = save_model(potential, tmp_path / "model.pt")
    atoms = molecule()
    atoms.calc = mlpot.MLPotCalculator(str(path))
    expected = MLPotCalculator(potential).get_potential_energy(molecule())
    assert atoms.get_potential_energy() == pytest.approx(expected, abs=1e-10)


def test_missing_model_file_raises(tmp_path):
    with pytest.raises(ModelFileError, match="missing.pt"):
        MLPotCalculator(tmp_path / "missing.pt")


# Neighbour-list skin


@pytest.mark.parametrize("model", ["invariant", "equivariant"])
def test_envelope_ignores_pairs_beyond_cutoff(model):
    potential = make_potential(model=model)
    atoms = random_periodic(6, num_atoms=12, length=6.0)
    plain = atoms_to_graph(atoms, CUTOFF)
    wide = atoms_to_graph(atoms, CUTOFF + 1.5)
    assert wide[keys.EDGE_INDEX].shape[1] > plain[keys.EDGE_INDEX].shape[1]
    expected = potential(plain, compute_forces=True, compute_stress=True)
    result = potential(wide, compute_forces=True, compute_stress=True)
    for name in (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS):
        np.testing.assert_allclose(
            result[name].detach().numpy(), expected[name].detach().numpy(), rtol=0, atol=1e-12, err_msg=name
        )


def test_dipole_head_ignores_pairs_beyond_cutoff():
    potential = make_potential(dipole=True)
    atoms = random_periodic(7, num_atoms=12, length=6.0)
    expected = potential(atoms_to_graph(atoms, CUTOFF), compute_forces=False)
    result = potential(atoms_to_graph(atoms, CUTOFF + 1.5), compute_forces=False)
    for name in (keys.CHARGES, keys.DIPOLE):
        np.testing.assert_allclose(
            result[name].detach().numpy(), expected[name].detach().numpy(), rtol=0, atol=1e-12, err_msg=name
        )


@pytest.mark.parametrize("model", ["invariant", "equivariant"])
def test_skin_matches_fresh_list_on_random_walk(model):
    potential = make_potential(model=model)
    atoms = random_periodic(8, num_atoms=12, length=6.0)
    rng = np.random.default_rng(8)
    with_skin = MLPotCalculator(potential, skin=1.0)
    without_skin = MLPotCalculator(potential)
    steps = 20
    for _ in range(steps):
        atoms.positions += rng.uniform(-0.08, 0.08, atoms.positions.shape)
        with_skin.calculate(atoms, ["energy", "forces", "stress"])
        without_skin.calculate(atoms, ["energy", "forces", "stress"])
        for name in ("energy", "forces", "stress"):
            np.testing.assert_allclose(with_skin.results[name], without_skin.results[name], rtol=0, atol=1e-10)
    assert 1 < with_skin.neighbour_list_builds < steps
    assert without_skin.neighbour_list_builds == steps


@pytest.mark.parametrize("path", ["direct", "through_boundary"])
@pytest.mark.parametrize("offset", [0.05, 0.3, 0.6, 0.95])
def test_head_on_approach_misses_no_pair(potential, path, offset):
    """Two atoms approach, each moving just under skin/2 per step; every step must match a fresh list."""
    skin = 1.0
    start = CUTOFF + skin + offset
    length = 20.0
    if path == "direct":
        positions = [[0.0, 0.0, 0.0], [start, 0.0, 0.0]]
        direction = 1.0
    else:
        # The atoms sit near opposite faces and meet through the periodic boundary along x.
        positions = [[0.5 * start, 0.0, 0.0], [length - 0.5 * start, 0.0, 0.0]]
        direction = -1.0
    atoms = ase.Atoms("CO", positions=positions, cell=[length, 10.0, 10.0], pbc=True)

    with_skin = MLPotCalculator(potential, skin=skin)
    without_skin = MLPotCalculator(potential)
    step = 0.49 * skin
    distances = []
    while True:
        distance = atoms.get_distance(0, 1, mic=True)
        if distance < 1.0:
            break
        distances.append(distance)
        with_skin.calculate(atoms, ["energy", "forces"])
        without_skin.calculate(atoms, ["energy", "forces"])
        assert with_skin.results["energy"] == pytest.approx(without_skin.results["energy"], abs=1e-10)
        np.testing.assert_allclose(with_skin.results["forces"], without_skin.results["forces"], rtol=0, atol=1e-10)
        atoms.positions[0, 0] += direction * step
        atoms.positions[1, 0] -= direction * step

    assert min(distances) < CUTOFF
    assert with_skin.neighbour_list_builds < len(distances)
    assert np.abs(without_skin.results["forces"]).max() > 0.0


def test_cell_change_rebuilds_list(potential):
    atoms = random_periodic(9)
    calculator = MLPotCalculator(potential, skin=1.0)
    atoms.calc = calculator
    atoms.get_potential_energy()
    atoms.set_cell(atoms.cell.array * 1.001, scale_atoms=False)
    atoms.get_potential_energy()
    assert calculator.neighbour_list_builds == 2


def test_large_move_rebuilds_list(potential):
    atoms = molecule()
    calculator = MLPotCalculator(potential, skin=1.0)
    atoms.calc = calculator
    atoms.get_potential_energy()
    atoms.positions[0] += [0.3, 0.0, 0.0]
    atoms.get_potential_energy()
    reused = calculator.neighbour_list_builds
    atoms.positions[0] += [0.3, 0.0, 0.0]
    atoms.get_potential_energy()
    assert reused == 1
    assert calculator.neighbour_list_builds == 2


# Compiled model


class _BrokenCompiled(torch.nn.Module):
    """Stands in for a compiled module whose backend fails on the first call."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod = module

    def forward(self, *args):
        raise RuntimeError("backend compiler failed")


def test_compile_failure_falls_back(potential, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **options: _BrokenCompiled(module))
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential, compile=True)
    with pytest.warns(UserWarning, match="torch.compile of the energy network failed"):
        energy = atoms.get_potential_energy()
    assert energy == pytest.approx(MLPotCalculator(potential).get_potential_energy(molecule()), abs=1e-10)


@pytest.mark.slow
def test_compiled_matches_plain(potential):
    atoms = random_periodic(10)
    compiled = MLPotCalculator(potential, compile=True)
    plain = MLPotCalculator(potential)
    rng = np.random.default_rng(10)
    for _ in range(3):
        atoms.positions += rng.uniform(-0.05, 0.05, atoms.positions.shape)
        compiled.calculate(atoms, ["energy", "forces", "stress"])
        plain.calculate(atoms, ["energy", "forces", "stress"])
        for name in ("energy", "forces", "stress"):
            np.testing.assert_allclose(compiled.results[name], plain.results[name], rtol=0, atol=1e-9)
    assert not isinstance(compiled.model.energy_model, type(potential.energy_model))
