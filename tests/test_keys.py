"""The edge convention and field layout that mlpot.keys defines, checked on real graphs."""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch
from e3nn import o3

from mlpot import keys
from mlpot.data.graph import atoms_to_graph, collate, edge_vectors

SEEDS = range(5)


def random_direction(rng) -> np.ndarray:
    vector = rng.normal(size=3)
    return vector / np.linalg.norm(vector)


def two_atom_graph(seed: int):
    """Return a two-atom graph 1.1 Å long along a random direction, and the positions."""
    rng = np.random.default_rng(seed)
    first = rng.uniform(-2.0, 2.0, size=3)
    positions = np.stack([first, first + 1.1 * random_direction(rng)])
    return atoms_to_graph(ase.Atoms("CO", positions=positions), cutoff=3.0), torch.from_numpy(positions)


@pytest.mark.parametrize("seed", SEEDS)
def test_edge_index_both_directions(seed):
    graph, _ = two_atom_graph(seed)
    assert graph[keys.EDGE_INDEX].tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("seed", SEEDS)
def test_edge_vector_points_to_neighbour(seed):
    graph, positions = two_atom_graph(seed)
    vectors = edge_vectors(graph)
    centre, neighbour = graph[keys.EDGE_INDEX][:, 0].tolist()
    torch.testing.assert_close(vectors[0], positions[neighbour] - positions[centre], rtol=0, atol=1e-12)
    torch.testing.assert_close(vectors[1], -vectors[0], rtol=0, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_edge_vector_through_image(seed):
    # Atom 0 sits just inside the face x = 0 and atom 1 just inside x = a, so the short bond
    # crosses the face: from atom 0 it points along -a, to the image of atom 1 one cell back.
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(5.0, 7.0, size=3))
    cell[1, 0] = rng.uniform(-1.0, 1.0)
    inside = rng.uniform(0.3, 0.7, size=2)
    fractional = np.array([[0.05, *inside], [0.95, *inside]])
    atoms = ase.Atoms("CO", scaled_positions=fractional, cell=cell, pbc=True)
    graph = atoms_to_graph(atoms, cutoff=1.5)

    assert graph[keys.EDGE_INDEX].tolist() == [[0, 1], [1, 0]]
    assert graph[keys.CELL_SHIFTS].tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    expected = atoms.positions[1] - atoms.positions[0] - cell[0]
    torch.testing.assert_close(edge_vectors(graph)[0], torch.from_numpy(expected), rtol=0, atol=1e-12)
    assert edge_vectors(graph)[0, 0] < 0


@pytest.mark.parametrize("seed", SEEDS)
def test_odd_harmonics_flip_when_reversed(seed):
    graph, positions = two_atom_graph(seed)
    centre, neighbour = graph[keys.EDGE_INDEX]
    convention = edge_vectors(graph)
    reversed_convention = positions[centre] - positions[neighbour]
    for degree in (1, 2, 3):
        ours = o3.spherical_harmonics(degree, convention, normalize=True)
        theirs = o3.spherical_harmonics(degree, reversed_convention, normalize=True)
        assert ours.abs().max() > 0.1
        sign = -1 if degree % 2 else 1
        torch.testing.assert_close(theirs, sign * ours, rtol=0, atol=1e-12)
        if degree % 2:
            assert not torch.allclose(theirs, ours), degree


def test_field_groups_disjoint():
    groups = [set(keys.PER_ATOM_FIELDS), set(keys.PER_GRAPH_FIELDS), set(keys.PER_EDGE_FIELDS)]
    assert not groups[0] & groups[1]
    assert not groups[0] & groups[2]
    assert not groups[1] & groups[2]


def test_labels_have_units_and_groups():
    for label in keys.LABELS:
        assert label in keys.UNITS, label
        assert label in keys.PER_ATOM_FIELDS or label in keys.PER_GRAPH_FIELDS, label


@pytest.mark.parametrize("seed", SEEDS)
def test_graph_fields_match_groups(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 6, size=3)
    graphs = []
    for size in sizes:
        atoms = ase.Atoms(numbers=np.full(size, 6), positions=rng.uniform(0.0, 3.0, size=(size, 3)))
        labels = {
            keys.ENERGY: rng.normal(),
            keys.FORCES: rng.normal(size=(size, 3)),
            keys.STRESS: np.eye(3),
            keys.DIPOLE: np.ones(3),
        }
        graphs.append(atoms_to_graph(atoms, cutoff=2.5, labels=labels))
    batch = collate(graphs)
    n_edges = batch[keys.EDGE_INDEX].shape[1]
    for name, tensor in batch.items():
        if name in keys.PER_ATOM_FIELDS:
            assert tensor.shape[0] == sizes.sum(), name
        elif name in keys.PER_GRAPH_FIELDS:
            assert tensor.shape[0] == len(sizes), name
        elif name in keys.PER_EDGE_FIELDS:
            assert tensor.shape[0] == n_edges, name
        else:
            assert name == keys.EDGE_INDEX
