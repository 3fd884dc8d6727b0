"""Neighbour lists against ASE, a brute-force search and known coordination shells."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import ase
import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlpot.data import neighbours
from mlpot.data.neighbours import SMALL_MOLECULE_ATOMS, neighbour_list
from mlpot.errors import DataError

SEEDS = range(4)
ALL_PBC = [np.array(flags) for flags in itertools.product([False, True], repeat=3)]


def edge_map(positions, cell, pbc, cutoff) -> dict[tuple, float]:
    """Return {(i, j, shift): distance} from :func:`neighbour_list`."""
    edge_index, shifts = neighbour_list(positions, cell, pbc, cutoff)
    vectors = positions[edge_index[1]] - positions[edge_index[0]] + shifts @ np.asarray(cell, dtype=float)
    distances = np.linalg.norm(vectors, axis=1)
    return {(i, j, tuple(s)): d for i, j, s, d in zip(*edge_index.tolist(), shifts.tolist(), distances)}


def ase_map(atoms: ase.Atoms, cutoff: float) -> dict[tuple, float]:
    i, j, shifts, distances = ase_neighbor_list("ijSd", atoms, cutoff)
    return {(a, b, tuple(s)): d for a, b, s, d in zip(i.tolist(), j.tolist(), shifts.tolist(), distances)}


def brute_force_map(positions, cell, pbc, cutoff) -> dict[tuple, float]:
    """Search every image within enough whole lattice vectors to cover the cutoff."""
    cell = np.asarray(cell, dtype=float)
    face_distances = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    reach = [int(np.ceil(cutoff / d)) + 1 if periodic else 0 for d, periodic in zip(face_distances, pbc)]
    found = {}
    for shift in itertools.product(*(range(-n, n + 1) for n in reach)):
        offset = np.array(shift) @ cell
        for i, j in itertools.product(range(len(positions)), repeat=2):
            distance = np.linalg.norm(positions[j] - positions[i] + offset)
            if distance < cutoff and (i != j or any(shift)):
                found[(i, j, shift)] = distance
    return found


def assert_same_edges(ours: dict, reference: dict):
    assert ours.keys() == reference.keys()
    keys_ = sorted(reference)
    np.testing.assert_allclose([ours[k] for k in keys_], [reference[k] for k in keys_], rtol=0, atol=1e-9)


def random_cell(rng, scale=(3.0, 6.0)) -> np.ndarray:
    """Return a triclinic cell with random lengths and a skew of up to a third of them."""
    lengths = rng.uniform(*scale, size=3)
    return np.diag(lengths) + rng.uniform(-1.0, 1.0, size=(3, 3)) * lengths.min() / 3


def random_atoms(rng, n_atoms, cell, pbc, spread=(0.0, 1.0)) -> ase.Atoms:
    fractional = rng.uniform(*spread, size=(n_atoms, 3))
    return ase.Atoms(numbers=np.full(n_atoms, 18), positions=fractional @ cell, cell=cell, pbc=pbc)


def check_against_ase(atoms: ase.Atoms, cutoff: float):
    ours = edge_map(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert_same_edges(ours, ase_map(atoms, cutoff))


# Against ASE


@pytest.mark.parametrize("seed", SEEDS)
def test_molecule_without_cell(seed):
    rng = np.random.default_rng(seed)
    atoms = ase.Atoms(numbers=np.full(12, 6), positions=rng.uniform(-3.0, 3.0, size=(12, 3)))
    check_against_ase(atoms, 3.0)


@pytest.mark.parametrize("n_atoms", [2, SMALL_MOLECULE_ATOMS, SMALL_MOLECULE_ATOMS + 1, 150])
def test_molecule_sizes_against_ase(n_atoms):
    # Molecules up to SMALL_MOLECULE_ATOMS compare all pairs directly; larger ones go through vesin.
    rng = np.random.default_rng(n_atoms)
    width = 1.5 * n_atoms ** (1.0 / 3.0)
    atoms = ase.Atoms(numbers=np.full(n_atoms, 6), positions=rng.uniform(0.0, width, size=(n_atoms, 3)))
    check_against_ase(atoms, 3.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_small_molecule_paths_agree(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(-4.0, 4.0, size=(30, 3))
    direct = neighbour_list(positions, np.zeros((3, 3)), [False] * 3, 3.5)
    monkeypatch.setattr(neighbours, "SMALL_MOLECULE_ATOMS", 0)
    through_vesin = neighbour_list(positions, np.zeros((3, 3)), [False] * 3, 3.5)
    np.testing.assert_array_equal(direct[0], through_vesin[0])
    np.testing.assert_array_equal(direct[1], through_vesin[1])
    assert direct[0].dtype == through_vesin[0].dtype
    assert direct[1].dtype == through_vesin[1].dtype


def test_bundled_box_without_pbc_ignored(data_dir):
    atoms = ase.io.read(data_dir / "ethanol" / "train.xyz", index=0)
    assert not atoms.pbc.any()
    assert atoms.cell.lengths().min() == 50.0
    ours = edge_map(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    assert_same_edges(ours, ase_map(atoms, 5.0))
    assert len(ours) == len(atoms) * (len(atoms) - 1)


def test_cell_ignored_without_pbc():
    rng = np.random.default_rng(7)
    atoms = random_atoms(rng, 8, random_cell(rng), [False] * 3, spread=(-0.5, 1.5))
    with_cell = edge_map(atoms.positions, atoms.cell.array, atoms.pbc, 3.5)
    without_cell = edge_map(atoms.positions, np.zeros((3, 3)), atoms.pbc, 3.5)
    assert with_cell.keys() == without_cell.keys()


@pytest.mark.parametrize("pbc", ALL_PBC, ids=lambda flags: "".join("T" if f else "F" for f in flags))
@pytest.mark.parametrize("seed", SEEDS)
def test_triclinic_any_periodicity(seed, pbc):
    rng = np.random.default_rng(seed)
    atoms = random_atoms(rng, 7, random_cell(rng), pbc)
    check_against_ase(atoms, rng.uniform(2.0, 5.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_cell_smaller_than_cutoff(seed):
    rng = np.random.default_rng(seed)
    atoms = random_atoms(rng, 3, random_cell(rng, scale=(2.0, 3.0)), True)
    cutoff = 6.0
    ours = edge_map(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert_same_edges(ours, ase_map(atoms, cutoff))
    assert max(max(abs(s) for s in shift) for _, _, shift in ours) >= 2


@pytest.mark.parametrize("seed", SEEDS)
def test_left_handed_cell(seed):
    rng = np.random.default_rng(seed)
    cell = random_cell(rng)[[1, 0, 2]]
    assert np.linalg.det(cell) < 0
    check_against_ase(random_atoms(rng, 6, cell, True), 4.0)


@pytest.mark.parametrize("pbc", [[True] * 3, [True, False, True]])
@pytest.mark.parametrize("seed", SEEDS)
def test_atoms_outside_cell(seed, pbc):
    rng = np.random.default_rng(seed)
    atoms = random_atoms(rng, 6, random_cell(rng), pbc, spread=(-3.0, 4.0))
    check_against_ase(atoms, 3.5)


def test_far_unwrapped_atoms():
    rng = np.random.default_rng(11)
    cell = random_cell(rng)
    atoms = random_atoms(rng, 6, cell, True)
    far = atoms.copy()
    far.positions += rng.integers(-1, 2, size=(6, 3)) * 3 * 10**9 @ cell
    near_edges = edge_map(atoms.positions, cell, atoms.pbc, 1.5)
    far_edges = edge_map(far.positions, cell, far.pbc, 1.5)
    assert len(near_edges) > 0
    assert sorted(far_edges.values()) == pytest.approx(sorted(near_edges.values()), abs=1e-4)


# Against a brute-force search


@pytest.mark.parametrize("seed", SEEDS)
def test_brute_force_skewed_cell(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(3.0, 4.0, size=2)
    cell = np.array([[a, 0.0, 0.0], [0.8 * a, 0.5 * b, 0.0], [0.4 * a, -0.6 * b, 2.5]])
    positions = rng.uniform(-0.5, 1.5, size=(4, 3)) @ cell
    for pbc in ([True] * 3, [True, False, True], [False] * 3):
        ours = edge_map(positions, cell, pbc, 4.2)
        assert_same_edges(ours, brute_force_map(positions, cell, pbc, 4.2))


# Known coordination shells


def neighbour_counts(atoms: ase.Atoms, cutoff: float) -> np.ndarray:
    edge_index, _ = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    return np.bincount(edge_index[0], minlength=len(atoms))


def test_fcc_copper_primitive():
    # Shells of fcc at a = 3.6 Å below 5 Å: 12 at 2.55 Å, 6 at 3.6 Å, 24 at 4.41 Å.
    counts = neighbour_counts(bulk("Cu", "fcc", a=3.6), 5.0)
    assert counts.tolist() == [42]


def test_fcc_copper_supercell():
    counts = neighbour_counts(bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2)), 5.0)
    assert counts.tolist() == [42] * 8


def test_fcc_copper_cubic():
    counts = neighbour_counts(bulk("Cu", "fcc", a=3.6, cubic=True), 5.0)
    assert counts.tolist() == [42] * 4


def test_silicon_diamond_primitive():
    # Shells of diamond at a = 5.43 Å below 5 Å: 4 at 2.35 Å, 12 at 3.84 Å, 12 at 4.50 Å.
    counts = neighbour_counts(bulk("Si", "diamond", a=5.43), 5.0)
    assert counts.tolist() == [28, 28]


@pytest.mark.parametrize("seed", SEEDS)
def test_lattice_translation_keeps_distances(seed):
    rng = np.random.default_rng(seed)
    atoms = random_atoms(rng, 5, random_cell(rng), True)
    moved = atoms.positions.copy()
    for atom in range(len(atoms)):
        moved[atom] += rng.integers(-3, 4, size=3) @ atoms.cell.array
    before = edge_map(atoms.positions, atoms.cell.array, atoms.pbc, 4.5)
    after = edge_map(moved, atoms.cell.array, atoms.pbc, 4.5)
    for i, j in itertools.product(range(len(atoms)), repeat=2):
        pair_before = sorted(d for (a, b, _), d in before.items() if (a, b) == (i, j))
        pair_after = sorted(d for (a, b, _), d in after.items() if (a, b) == (i, j))
        assert pair_after == pytest.approx(pair_before, abs=1e-9), (i, j)


# Output convention


def test_output_types_and_order():
    rng = np.random.default_rng(5)
    atoms = random_atoms(rng, 6, random_cell(rng), True)
    edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
    assert edge_index.dtype == np.int64
    assert shifts.dtype == np.int64
    assert edge_index.shape == (2, len(shifts))
    assert np.all(np.diff(edge_index[0]) >= 0)


def test_every_edge_has_its_reverse():
    rng = np.random.default_rng(6)
    atoms = random_atoms(rng, 6, random_cell(rng), [True, False, True])
    edges = edge_map(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
    for i, j, shift in edges:
        assert (j, i, tuple(-s for s in shift)) in edges


def test_no_shift_along_open_directions():
    rng = np.random.default_rng(8)
    atoms = random_atoms(rng, 6, random_cell(rng, scale=(2.0, 3.0)), [True, False, False])
    _, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    assert not shifts[:, 1:].any()


def test_no_atoms():
    edge_index, shifts = neighbour_list(np.zeros((0, 3)), np.eye(3), [True] * 3, 3.0)
    assert edge_index.shape == (2, 0)
    assert shifts.shape == (0, 3)


# Bad input


def test_nan_position_raises():
    positions = np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 1.0]])
    with pytest.raises(DataError, match="atom 1 is NaN"):
        neighbour_list(positions, np.zeros((3, 3)), [False] * 3, 3.0)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan")])
def test_bad_cutoff_raises(cutoff):
    with pytest.raises(DataError, match="cutoff"):
        neighbour_list(np.zeros((2, 3)), np.zeros((3, 3)), [False] * 3, cutoff)


@pytest.mark.parametrize(
    "cell", [np.zeros((3, 3)), np.array([[2.0, 0, 0], [4.0, 0, 0], [0, 0, 3.0]]), np.full((3, 3), np.nan)]
)
def test_degenerate_periodic_cell_raises(cell):
    with pytest.raises(DataError, match="periodic lattice vectors"):
        neighbour_list(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), cell, [True] * 3, 3.0)


def test_flat_geometries_do_not_crash():
    # Planar and collinear sets several hundred Å wide, checked at a 0.1 Å cutoff, made vesin 0.6
    # divide by zero and kill the process. They run in a child process, so a crash fails one test.
    script = textwrap.dedent(
        """
        import numpy as np
        from mlpot.data.neighbours import SMALL_MOLECULE_ATOMS, neighbour_list
        rng = np.random.default_rng(0)
        for flat_axes in ([2], [0, 1], [1]):
            for pbc in ([False] * 3, [True, True, False], [True, False, False]):
                # More atoms than SMALL_MOLECULE_ATOMS, so that molecules go through vesin too,
                # 10 Å apart along every axis that is not flat.
                count = SMALL_MOLECULE_ATOMS + 16
                positions = np.stack([rng.permutation(count) * 10.0 for _ in range(3)], axis=1)
                positions[:, flat_axes] = 0.0
                positions[1] = positions[0] + [0.05, 0.0, 0.0]
                edge_index, _ = neighbour_list(positions, np.eye(3) * 1000.0, pbc, 0.1)
                assert sorted(map(tuple, edge_index.T.tolist())) == [(0, 1), (1, 0)], edge_index
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
