"""Physics checks of the equivariant energy model, alone and feeding the dipole head (see physics_kit)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from physics_kit import EnergyModelChecks, randomise_parameters
from physics_structures import (
    assert_predictions_close,
    molecule,
    predict,
    random_cell,
    random_improper_rotation,
    random_molecule,
    random_rotation,
    random_unit_vector,
    rotate_prediction,
    rotated,
    translated,
)

from mlpot import keys
from mlpot.config import ModelConfig
from mlpot.data.graph import atoms_to_graph, collate
from mlpot.errors import ConfigError
from mlpot.models.io import load_model, save_model
from mlpot.models.potential import Potential

#: H, C and O with isolated-atom energies of the size DFT gives (eV), as in the invariant checks.
ELEMENTS = [1, 6, 8]
REFERENCE_ENERGIES = [-13.6, -1027.0, -2038.0]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run torch on one thread while these tests run.

    The graphs are small, so a second thread gains nothing. On two CPU cores busy with other jobs,
    one force evaluation of an 8-atom molecule took 740 ms with two threads and 10 ms with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(dtype: str, **changes) -> ModelConfig:
    values = dict(
        model="equivariant",
        cutoff=4.0,
        equivariant_features=8,
        num_radial=6,
        radial_hidden=16,
        equivariant_layers=2,
        lmax=2,
        correlation=3,
        dtype=dtype,
    )
    values.update(changes)
    return ModelConfig(**values)


_built: dict[tuple, Potential] = {}


def make_potential(dtype: str, seed: int = 0, **changes) -> Potential:
    """Return a fresh copy of a small potential with random weights.

    Copies come from a cache, because e3nn generates and optimises the code of every tensor
    product at construction, which takes about a second per potential.
    """
    key = (dtype, seed, tuple(sorted(changes.items())))
    if key not in _built:
        torch.manual_seed(seed)
        config = small_config(dtype, **changes)
        potential = Potential(config, ELEMENTS, REFERENCE_ENERGIES, energy_scale=0.8, avg_num_neighbours=6.0)
        # A gain of 1.5, as for the invariant model, gives forces up to 6e6 eV/Å, because the products
        # raise the weights to high powers. With 1.0, forces on the kit's structures are 0.05 to 0.4.
        randomise_parameters(potential, seed=seed, gain=1.0)
        _built[key] = potential
    return copy.deepcopy(_built[key])


#: Allowed cutoff-scan outliers. The envelope's value and first two derivatives vanish at the
#: cutoff, but its third does not, so the force's second derivative jumps there. That jump gives
#: outliers of order step², 3.6e-5 of the force RMS for these random weights, above the kit's
#: 1e-5. test_cutoff_no_kink checks the step² scaling, which a kink would break.
JUMP_TOLERANCES = {"float32": 1e-3, "float64": 1e-4}


class TestEquivariantPhysics(EnergyModelChecks):
    jump_tolerances = JUMP_TOLERANCES

    def make_potential(self, dtype: str) -> Potential:
        return make_potential(dtype)


class TestEquivariantDipolePhysics(EnergyModelChecks):
    """The whole kit with the dipole head, whose outputs it compares after each operation.

    With dipole_lmax = 0 the head has no edge harmonics beyond l = 0, so every atomic dipole
    comes from the 1o features of the energy model.
    """

    jump_tolerances = JUMP_TOLERANCES

    def make_potential(self, dtype: str) -> Potential:
        return make_potential(dtype, dipole=True, dipole_features=4, dipole_lmax=0, dipole_layers=1)

    def test_atomic_dipoles_not_trivial(self, potential):
        structure = random_molecule(np.random.default_rng(20), potential.elements, 8)
        (prediction,) = predict(potential, [structure])
        assert np.abs(prediction[keys.ATOMIC_DIPOLES]).max() > 1e-3

    def test_lone_atom_no_dipole(self, potential):
        # An atom without neighbours has no preferred direction.
        rng = np.random.default_rng(21)
        cluster = random_molecule(rng, potential.elements, 5)
        lone = molecule([potential.elements[0]], [cluster.positions.max(axis=0) + 2.0 * potential.cutoff])
        (prediction,) = predict(potential, [cluster + lone])
        assert np.all(prediction[keys.ATOMIC_DIPOLES][-1] == 0.0)

    def test_charged_translation(self, potential, tolerance):
        # μ = Σ q_i r_i + Σ μ_i about the origin, so translating by t adds Q·t.
        rng = np.random.default_rng(22)
        structures = [random_molecule(rng, potential.elements, count) for count in (4, 6, 7)]
        total_charges = [1.0, -2.0, 0.5]

        def dipoles(shift):
            graphs = [
                atoms_to_graph(translated(atoms, shift), potential.cutoff, total_charge=charge)
                for atoms, charge in zip(structures, total_charges)
            ]
            return potential(collate(graphs), compute_forces=False)[keys.DIPOLE].detach().double().numpy()

        before = dipoles(np.zeros(3))
        for _ in range(3):
            shift = rng.normal(scale=3.0, size=3)
            expected = before + np.outer(total_charges, shift)
            error = np.abs(dipoles(shift) - expected).max()
            assert error <= tolerance * np.abs(expected).max()

    def test_charges_sum_to_total(self, potential, tolerance):
        rng = np.random.default_rng(23)
        structures = [random_molecule(rng, potential.elements, count) for count in (3, 5, 8)]
        total_charges = [0.0, 1.0, -2.0]
        graphs = [atoms_to_graph(atoms, potential.cutoff, total_charge=q) for atoms, q in zip(structures, total_charges)]
        charges = potential(collate(graphs), compute_forces=False)[keys.CHARGES].detach().double()
        sums = torch.stack([part.sum() for part in charges.split([len(atoms) for atoms in structures])])
        torch.testing.assert_close(sums, torch.tensor(total_charges, dtype=torch.float64), atol=tolerance, rtol=0.0)


def cutoff_scan_outlier(potential: Potential, half_width: float) -> float:
    """Largest second difference of the forces over 101 distances of a third atom across the cutoff."""
    rng = np.random.default_rng(40)
    numbers = rng.choice(ELEMENTS, 3)
    direction = random_unit_vector(rng)
    bond = -1.2 * direction
    distances = potential.cutoff + np.linspace(-half_width, half_width, 101)
    scan = predict(potential, [molecule(numbers, [np.zeros(3), bond, d * direction]) for d in distances])
    steps = np.diff(np.stack([prediction[keys.FORCES] for prediction in scan]), axis=0)
    return float(np.abs(steps[1:-1] - 0.5 * (steps[:-2] + steps[2:])).max())


def test_cutoff_no_kink():
    # Halving the step divides the outlier by 2 at a kink (a jump of the force's first derivative),
    # by 4 at a jump of its second derivative, and by 8 on a curve without jumps.
    potential = make_potential("float64")
    coarse, fine = cutoff_scan_outlier(potential, 0.1), cutoff_scan_outlier(potential, 0.05)
    assert coarse > 1e-12
    assert coarse / fine > 3.0


def test_node_features_have_vectors():
    potential = make_potential("float64")
    irreps = potential.energy_model.irreps_out
    assert "1o" in [str(ir) for _, ir in irreps]
    structure = random_molecule(np.random.default_rng(30), ELEMENTS, 5)
    graph = collate([atoms_to_graph(structure, potential.cutoff)])
    species = potential.species(graph[keys.ATOMIC_NUMBERS])
    edge_index = graph[keys.EDGE_INDEX]
    positions = graph[keys.POSITIONS]
    vectors = positions[edge_index[1]] - positions[edge_index[0]]
    _, features = potential.energy_model(species, edge_index, vectors)
    assert features.shape == (len(structure), irreps.dim)


@pytest.mark.parametrize(
    ("lmax", "correlation"), [(0, 2), (1, 1), (3, 2)], ids=["lmax0", "correlation1", "lmax3"]
)
def test_variant_orthogonal_transforms(lmax, correlation):
    potential = make_potential("float64", lmax=lmax, correlation=correlation, equivariant_features=4)
    rng = np.random.default_rng(31 + lmax)
    structures = [random_molecule(rng, ELEMENTS, 7), random_cell(rng, ELEMENTS, 5)]
    expected = predict(potential, structures, stress=True)
    for draw in range(3):
        for kind, matrix in (("rotation", random_rotation(rng)), ("improper rotation", random_improper_rotation(rng))):
            moved = predict(potential, [rotated(atoms, matrix) for atoms in structures], stress=True)
            for index, (actual, original) in enumerate(zip(moved, expected)):
                where = f"lmax {lmax}, correlation {correlation}, {kind} {draw} of structure {index}"
                assert_predictions_close(actual, rotate_prediction(original, matrix), 1e-9, where)


def test_force_loss_reaches_every_weight():
    # Training on forces differentiates through the tensor products twice.
    potential = make_potential("float64", dipole=True, dipole_features=4, dipole_lmax=1, dipole_layers=1)
    rng = np.random.default_rng(32)
    structures = [random_molecule(rng, ELEMENTS, 6), random_molecule(rng, ELEMENTS, 8)]
    batch = collate([atoms_to_graph(atoms, potential.cutoff) for atoms in structures])
    outputs = potential(batch, compute_forces=True, create_graph=True)
    loss = outputs[keys.FORCES].pow(2).sum() + outputs[keys.ENERGY].pow(2).sum() + outputs[keys.DIPOLE].pow(2).sum()
    loss.backward()
    for name, parameter in potential.named_parameters():
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert parameter.grad.abs().max() > 0, f"gradient of {name} is zero"


def test_copy_saves_and_loads(tmp_path):
    # Training averages a deep copy of the model, and its model file must load into a fresh build.
    # With 12 or more channels up to l = 2, e3nn 0.6 folds constants of the products into code
    # that a copy stores under new names.
    potential = make_potential("float32", equivariant_features=12, dipole=True, dipole_features=4, dipole_lmax=1)
    copied = copy.deepcopy(potential)
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.add_(0.1)
    assert sorted(copied.state_dict()) == sorted(potential.state_dict())

    path = save_model(copied, tmp_path / "model.pt")
    loaded = load_model(path)
    structure = random_molecule(np.random.default_rng(50), ELEMENTS, 6)
    (expected,) = predict(copied, [structure])
    (actual,) = predict(loaded, [structure])
    assert_predictions_close(actual, expected, 0.0, "model loaded from the file of a copy")


@pytest.mark.parametrize(
    ("name", "value"),
    [("equivariant_features", 0), ("equivariant_layers", 0), ("lmax", -1), ("correlation", 0)],
)
def test_invalid_size_rejected(name, value):
    with pytest.raises(ConfigError, match=name):
        make_potential("float64", **{name: value})
