"""Symmetry, charge conservation, gradients and construction checks of the dipole heads."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import pytest
import torch
from e3nn import o3

from mlpot import keys
from mlpot.config import ModelConfig
from mlpot.data.graph import atoms_to_graph, collate
from mlpot.data.io import read_structures
from mlpot.errors import ConfigError
from mlpot.models.dipole import InvariantDipoleReadout, build_dipole_head, build_invariant_dipole_readout
from mlpot.models.potential import Potential

CUTOFF = 3.0
ELEMENTS = [1, 6, 8]
DTYPES = ("float32", "float64")
#: Absolute and relative tolerance of each model dtype, for values of order 1 e·Å.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


def small_config(dtype: str = "float64", **changes) -> ModelConfig:
    values = dict(
        cutoff=CUTOFF,
        num_features=8,
        num_radial=4,
        radial_hidden=8,
        num_interactions=1,
        lmax=1,
        dtype=dtype,
        dipole=True,
        dipole_features=4,
        dipole_lmax=2,
        dipole_layers=2,
    )
    values.update(changes)
    return ModelConfig(**values)


def make_potential(dtype: str, seed: int = 0, **changes) -> Potential:
    torch.manual_seed(seed)
    # Molecules in a 4 Å box have about 6 neighbours per atom within the cutoff; normalising the
    # neighbour sums by that keeps features of order one, as training statistics would.
    return Potential(small_config(dtype, **changes), ELEMENTS, [0.0] * len(ELEMENTS), avg_num_neighbours=6.0)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run torch on one thread while these tests run.

    The graphs are small, and with two threads on two busy shared CPU cores the training test
    ran over ten times slower than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=DTYPES)
def potential(request) -> Potential:
    """A small potential with the dipole head, built once per dtype; tests must not change it."""
    return make_potential(request.param)


def random_molecule(rng: np.random.Generator, num_atoms: int) -> ase.Atoms:
    """Place H, C and O atoms at random in a 4 Å box, at least 0.9 Å apart."""
    positions = [rng.uniform(0.0, 4.0, size=3)]
    while len(positions) < num_atoms:
        candidate = rng.uniform(0.0, 4.0, size=3)
        if min(np.linalg.norm(candidate - p) for p in positions) > 0.9:
            positions.append(candidate)
    return ase.Atoms(numbers=rng.choice(ELEMENTS, size=num_atoms), positions=np.array(positions))


def random_molecules(seed: int, count: int = 3) -> list[ase.Atoms]:
    rng = np.random.default_rng(seed)
    return [random_molecule(rng, int(rng.integers(4, 9))) for _ in range(count)]


def random_orthogonal(rng: np.random.Generator, proper: bool) -> np.ndarray:
    """Draw a Haar-random orthogonal matrix with determinant +1 (proper) or -1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def predict(potential: Potential, molecules: list[ase.Atoms], charges: list[float] | None = None) -> dict:
    charges = charges or [0.0] * len(molecules)
    graph = collate([atoms_to_graph(atoms, CUTOFF, total_charge=q) for atoms, q in zip(molecules, charges)])
    return potential(graph, compute_forces=False)


def transformed(molecules: list[ase.Atoms], matrix: np.ndarray, shift: np.ndarray | None = None) -> list[ase.Atoms]:
    result = []
    for atoms in molecules:
        moved = atoms.copy()
        moved.positions = atoms.positions @ matrix.T + (0.0 if shift is None else shift)
        result.append(moved)
    return result


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Compare a prediction with the tolerance of its dtype."""
    tolerance = TOLERANCE[actual.dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
def test_orthogonal_transform(potential, proper):
    # Positions are polar vectors (1o), so μ(R r) = R μ(r) for every orthogonal R, det R = -1 included.
    rng = np.random.default_rng(11 if proper else 12)
    molecules = random_molecules(seed=1)
    before = predict(potential, molecules)
    assert before[keys.ATOMIC_DIPOLES].abs().max() > 1e-6

    for _ in range(4):
        matrix = random_orthogonal(rng, proper)
        after = predict(potential, transformed(molecules, matrix))
        rotation = torch.tensor(matrix)
        assert_close(after[keys.DIPOLE], before[keys.DIPOLE].double() @ rotation.T)
        assert_close(after[keys.ATOMIC_DIPOLES], before[keys.ATOMIC_DIPOLES].double() @ rotation.T)
        assert_close(after[keys.CHARGES], before[keys.CHARGES])


def test_permutation(potential):
    rng = np.random.default_rng(21)
    molecules = random_molecules(seed=2)
    before = predict(potential, molecules)

    for _ in range(3):
        orders = [rng.permutation(len(atoms)) for atoms in molecules]
        after = predict(potential, [atoms[order] for atoms, order in zip(molecules, orders)])
        offsets = np.cumsum([0] + [len(atoms) for atoms in molecules[:-1]])
        index = torch.tensor(np.concatenate([order + offset for order, offset in zip(orders, offsets)]))
        assert_close(after[keys.DIPOLE], before[keys.DIPOLE])
        assert_close(after[keys.CHARGES], before[keys.CHARGES][index])
        assert_close(after[keys.ATOMIC_DIPOLES], before[keys.ATOMIC_DIPOLES][index])


def test_translation_neutral(potential):
    rng = np.random.default_rng(31)
    molecules = random_molecules(seed=3)
    before = predict(potential, molecules)

    for _ in range(3):
        shift = rng.normal(scale=3.0, size=3)
        after = predict(potential, transformed(molecules, np.eye(3), shift))
        assert_close(after[keys.DIPOLE], before[keys.DIPOLE])


def test_translation_charged(potential):
    # μ = Σ q_i r_i + Σ μ_i about the origin, so translating by t adds Q·t.
    rng = np.random.default_rng(41)
    molecules = random_molecules(seed=4)
    total_charges = [1.0, -2.0, 0.5]
    before = predict(potential, molecules, total_charges)

    for _ in range(3):
        shift = rng.normal(scale=3.0, size=3)
        after = predict(potential, transformed(molecules, np.eye(3), shift), total_charges)
        expected = before[keys.DIPOLE].double() + torch.tensor(total_charges).unsqueeze(-1) * torch.tensor(shift)
        assert_close(after[keys.DIPOLE], expected)
        assert_close(after[keys.CHARGES], before[keys.CHARGES])


def test_charges_sum_to_total(potential):
    molecules = random_molecules(seed=5, count=4)
    total_charges = [0.0, 1.0, -2.0, 0.25]
    results = predict(potential, molecules, total_charges)

    sizes = [len(atoms) for atoms in molecules]
    sums = torch.stack([part.sum() for part in results[keys.CHARGES].split(sizes)])
    assert_close(sums, torch.tensor(total_charges))


def dipole_gradients(potential: Potential, molecules: list[ase.Atoms]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Return d(Σ μ² + Σ q² + Σ μ_i²)/d(positions, weights) for a batch of molecules."""
    graph = collate([atoms_to_graph(atoms, CUTOFF) for atoms in molecules])
    positions = graph[keys.POSITIONS].clone().requires_grad_(True)
    graph[keys.POSITIONS] = positions
    results = potential(graph, compute_forces=False)
    loss = (
        results[keys.DIPOLE].pow(2).sum()
        + results[keys.CHARGES].pow(2).sum()
        + results[keys.ATOMIC_DIPOLES].pow(2).sum()
    )
    parameters = list(potential.dipole_head.parameters())
    gradients = torch.autograd.grad(loss, [positions, *parameters], allow_unused=True)
    return gradients[0], [g for g in gradients[1:] if g is not None]


def test_gradient_edge_along_z(potential):
    rng = np.random.default_rng(51)
    molecules = []
    for direction in (1.0, -1.0):
        atoms = random_molecule(rng, 4)
        # The last atom sits exactly on the z axis through the first, where φ is undefined.
        atoms.positions[-1] = atoms.positions[0] + [0.0, 0.0, direction * rng.uniform(1.0, 2.5)]
        molecules.append(atoms)
    molecules.append(ase.Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 1.13]]))

    position_gradient, weight_gradients = dipole_gradients(potential, molecules)
    assert torch.isfinite(position_gradient).all()
    assert all(torch.isfinite(g).all() for g in weight_gradients)
    assert position_gradient.abs().max() > 0


def test_isolated_atom(potential):
    # A lone atom, and a molecule with one atom beyond the cutoff of all the others.
    lone = ase.Atoms("O", positions=[[0.5, -0.2, 0.3]])
    molecule = random_molecule(np.random.default_rng(61), 4)
    molecule += ase.Atoms("H", positions=[molecule.positions.mean(axis=0) + [10.0, 0.0, 0.0]])

    position_gradient, weight_gradients = dipole_gradients(potential, [lone, molecule])
    assert torch.isfinite(position_gradient).all()
    assert all(torch.isfinite(g).all() for g in weight_gradients)

    # An atom without neighbours has no preferred direction, so its atomic dipole is zero.
    atomic_dipoles = predict(potential, [lone, molecule])[keys.ATOMIC_DIPOLES]
    assert atomic_dipoles[0].abs().max() == 0
    assert atomic_dipoles[-1].abs().max() == 0


@pytest.mark.parametrize("changes", [{"dipole_lmax": 0}, {"dipole_layers": 0}], ids=["lmax0", "layers0"])
def test_scalar_only_rejected(changes):
    with pytest.raises(ConfigError, match="1o"):
        make_potential("float64", **changes)


def test_vector_input_accepted():
    # With a 1o part in the input, dipole_lmax = 0 can still form atomic dipoles.
    head = build_dipole_head(small_config(dipole_lmax=0), o3.Irreps("4x0e + 2x1o"), len(ELEMENTS), 1.0)
    assert head.irreps_in == o3.Irreps("4x0e + 2x1o")


@pytest.mark.parametrize("name", ["dipole_features", "dipole_lmax", "dipole_layers"])
def test_negative_size_rejected(name):
    with pytest.raises(ConfigError, match=name):
        build_dipole_head(small_config(**{name: -1}), o3.Irreps("4x0e"), len(ELEMENTS), 1.0)


def test_feature_shape_checked():
    head = build_dipole_head(small_config(), o3.Irreps("4x0e"), len(ELEMENTS), 1.0)
    species = torch.zeros(2, dtype=torch.int64)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    edge_vectors = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    with pytest.raises(ValueError, match="expected"):
        head(species, edge_index, edge_vectors, torch.zeros(2, 5))


def test_invariant_readout_needs_scalars():
    with pytest.raises(ConfigError, match="scalar"):
        InvariantDipoleReadout(o3.Irreps("4x0e + 1x1o"), len(ELEMENTS))


def test_invariant_readout_ignores_rotation():
    potential = make_potential("float64")
    potential.dipole_head = build_invariant_dipole_readout(
        potential.config, potential.energy_model.irreps_out, len(ELEMENTS)
    ).double()
    molecules = random_molecules(seed=7)
    before = predict(potential, molecules)
    matrix = random_orthogonal(np.random.default_rng(71), proper=True)
    after = predict(potential, transformed(molecules, matrix))

    assert before[keys.DIPOLE].abs().max() > 1e-3
    torch.testing.assert_close(after[keys.DIPOLE], before[keys.DIPOLE])
    torch.testing.assert_close(after[keys.CHARGES], torch.zeros_like(after[keys.CHARGES]))


DATA = Path(__file__).resolve().parents[1] / "data" / "acetylacetone" / "train_300K_xtb.xyz"


def randomly_rotated(structures, rng: np.random.Generator, copies: int) -> dict:
    """Batch ``copies`` randomly rotated copies of each neutral structure, with dipole labels rotated alike."""
    graphs = []
    for structure in structures:
        for _ in range(copies):
            matrix = random_orthogonal(rng, proper=True)
            atoms = structure.atoms.copy()
            atoms.positions = atoms.positions @ matrix.T
            graph = atoms_to_graph(atoms, 4.0)
            graph[keys.DIPOLE] = torch.tensor(matrix @ structure.labels[keys.DIPOLE]).unsqueeze(0)
            graphs.append(graph)
    return collate(graphs)


def fit_dipoles(potential: Potential, train: dict, steps: int) -> None:
    optimiser = torch.optim.Adam(potential.parameters(), lr=1e-2)
    for _ in range(steps):
        predicted = potential(train, compute_forces=False)[keys.DIPOLE]
        loss = (predicted - train[keys.DIPOLE].to(predicted.dtype)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_invariant_readout_collapses():
    # Trained on randomly oriented copies, the equivariant head learns the xTB dipoles, while the
    # invariant readout can only output one vector per geometry, and the best such vector is the
    # average over orientations, which is close to zero.
    structures = read_structures(DATA, labels=(keys.DIPOLE,), index="0:400:100")
    rng = np.random.default_rng(81)
    train = randomly_rotated(structures, rng, copies=16)
    test = randomly_rotated(structures, rng, copies=16)
    label = test[keys.DIPOLE]
    config = small_config(
        "float32", cutoff=4.0, num_features=16, radial_hidden=16, num_radial=6, dipole_features=8, dipole_layers=1
    )

    errors, sizes = {}, {}
    for kind in ("equivariant", "invariant"):
        torch.manual_seed(0)
        potential = Potential(config, ELEMENTS, [0.0] * len(ELEMENTS))
        if kind == "invariant":
            irreps = potential.energy_model.irreps_out
            potential.dipole_head = build_invariant_dipole_readout(config, irreps, len(ELEMENTS))
        fit_dipoles(potential, train, steps=100)
        with torch.no_grad():
            predicted = potential(test, compute_forces=False)[keys.DIPOLE].double()
        errors[kind] = float((predicted - label).pow(2).sum(-1).mean().sqrt() / label.pow(2).sum(-1).mean().sqrt())
        sizes[kind] = float(predicted.norm(dim=-1).mean() / label.norm(dim=-1).mean())

    assert errors["equivariant"] < 0.2
    # The best invariant output for a geometry is the mean of its 16 rotated training labels, of
    # expected size 1/sqrt(16) = 0.25 of a label; it cannot follow the test rotations at all.
    assert sizes["invariant"] < 0.5
    assert errors["invariant"] > 0.9
