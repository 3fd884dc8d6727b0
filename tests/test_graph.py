"""Graphs of single structures, batches of several, and moving them between devices and dtypes."""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pytest
import torch

from mlpot import keys
from mlpot.data.graph import atoms_to_graph, collate, edge_vectors, graph_to, structure_to_graph
from mlpot.data.labels import Structure
from mlpot.errors import DataError

SEEDS = range(3)
CUTOFF = 3.0


def random_structure(rng, periodic, n_atoms=None) -> Structure:
    n_atoms = int(n_atoms or rng.integers(2, 7))
    if periodic:
        cell = np.diag(rng.uniform(3.0, 5.0, size=3)) + rng.uniform(-0.5, 0.5, size=(3, 3))
        positions = rng.uniform(-0.2, 1.2, size=(n_atoms, 3)) @ cell
    else:
        cell = np.zeros((3, 3))
        positions = rng.uniform(0.0, 3.0, size=(n_atoms, 3))
    atoms = ase.Atoms(numbers=rng.integers(1, 9, size=n_atoms), positions=positions, cell=cell, pbc=periodic)
    stress = rng.normal(size=(3, 3))
    labels = {
        keys.ENERGY: np.float64(rng.normal()),
        keys.FORCES: rng.normal(size=(n_atoms, 3)),
        keys.STRESS: stress + stress.T,
        keys.TOTAL_CHARGE: np.float64(rng.integers(-1, 2)),
    }
    return Structure(atoms=atoms, labels=labels)


def random_batch(seed):
    rng = np.random.default_rng(seed)
    structures = [random_structure(rng, periodic) for periodic in (False, True, [True, False, True], False)]
    graphs = [structure_to_graph(structure, CUTOFF) for structure in structures]
    return structures, graphs, collate(graphs)


# One structure


def test_graph_dtypes_and_shapes():
    structure = random_structure(np.random.default_rng(0), periodic=True, n_atoms=4)
    graph = structure_to_graph(structure, CUTOFF)
    assert graph[keys.POSITIONS].dtype == torch.float64
    assert graph[keys.CELL].shape == (1, 3, 3)
    assert graph[keys.CELL].dtype == torch.float64
    assert graph[keys.PBC].tolist() == [[True, True, True]]
    assert graph[keys.ATOMIC_NUMBERS].dtype == torch.int64
    assert graph[keys.EDGE_INDEX].dtype == torch.int64
    assert graph[keys.CELL_SHIFTS].dtype == torch.float64
    assert graph[keys.BATCH].tolist() == [0, 0, 0, 0]
    assert graph[keys.NUM_ATOMS].tolist() == [4]


def test_graph_labels_float64_with_batch_axis():
    structure = random_structure(np.random.default_rng(1), periodic=True, n_atoms=4)
    graph = structure_to_graph(structure, CUTOFF)
    assert graph[keys.ENERGY].shape == (1,)
    assert graph[keys.FORCES].shape == (4, 3)
    assert graph[keys.STRESS].shape == (1, 3, 3)
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS, keys.TOTAL_CHARGE):
        assert graph[name].dtype == torch.float64, name
    assert graph[keys.ENERGY].item() == structure.labels[keys.ENERGY]
    np.testing.assert_array_equal(graph[keys.FORCES].numpy(), structure.labels[keys.FORCES])


def test_positions_keep_float64_precision():
    atoms = ase.Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.7 + 1e-12]])
    graph = atoms_to_graph(atoms, CUTOFF)
    assert graph[keys.POSITIONS][1, 2].item() == 0.7 + 1e-12


def test_bundled_box_without_pbc_gives_zero_cell(data_dir):
    atoms = ase.io.read(data_dir / "ethanol" / "train.xyz", index=0)
    graph = atoms_to_graph(atoms, 5.0)
    assert not graph[keys.CELL].any()
    assert not graph[keys.CELL_SHIFTS].any()
    assert graph[keys.EDGE_INDEX].shape[1] == len(atoms) * (len(atoms) - 1)


def test_total_charge_default_and_override():
    atoms = ase.Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.7]])
    assert atoms_to_graph(atoms, CUTOFF)[keys.TOTAL_CHARGE].tolist() == [0.0]
    assert atoms_to_graph(atoms, CUTOFF, {keys.TOTAL_CHARGE: 1.0})[keys.TOTAL_CHARGE].tolist() == [1.0]
    overridden = atoms_to_graph(atoms, CUTOFF, {keys.TOTAL_CHARGE: 1.0}, total_charge=-1)
    assert overridden[keys.TOTAL_CHARGE].tolist() == [-1.0]


# Batches


@pytest.mark.parametrize("seed", SEEDS)
def test_collate_batch_index_and_counts(seed):
    structures, _, batch = random_batch(seed)
    sizes = [len(s.atoms) for s in structures]
    assert batch[keys.NUM_ATOMS].tolist() == sizes
    assert batch[keys.BATCH].tolist() == [k for k, size in enumerate(sizes) for _ in range(size)]


@pytest.mark.parametrize("seed", SEEDS)
def test_collate_offsets_edges(seed):
    _, graphs, batch = random_batch(seed)
    offset, start = 0, 0
    for graph in graphs:
        n_edges = graph[keys.EDGE_INDEX].shape[1]
        torch.testing.assert_close(batch[keys.EDGE_INDEX][:, start : start + n_edges], graph[keys.EDGE_INDEX] + offset)
        offset += len(graph[keys.POSITIONS])
        start += n_edges
    assert start == batch[keys.EDGE_INDEX].shape[1]


@pytest.mark.parametrize("seed", SEEDS)
def test_collate_keeps_float64_values(seed):
    structures, _, batch = random_batch(seed)
    positions = np.concatenate([s.atoms.positions for s in structures])
    forces = np.concatenate([s.labels[keys.FORCES] for s in structures])
    energies = [s.labels[keys.ENERGY] for s in structures]
    for name in (keys.POSITIONS, keys.CELL, keys.ENERGY, keys.FORCES, keys.STRESS, keys.TOTAL_CHARGE):
        assert batch[name].dtype == torch.float64, name
    np.testing.assert_array_equal(batch[keys.POSITIONS].numpy(), positions)
    np.testing.assert_array_equal(batch[keys.FORCES].numpy(), forces)
    np.testing.assert_array_equal(batch[keys.ENERGY].numpy(), energies)
    assert batch[keys.STRESS].shape == (len(structures), 3, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_edge_vectors_match_each_graph(seed):
    _, graphs, batch = random_batch(seed)
    expected = torch.cat([edge_vectors(graph) for graph in graphs])
    assert len(expected) > 0
    torch.testing.assert_close(edge_vectors(batch), expected, rtol=0, atol=1e-12)
    lengths = edge_vectors(batch).norm(dim=1)
    assert lengths.max() < CUTOFF


def test_edge_vectors_match_numpy():
    structure = random_structure(np.random.default_rng(4), periodic=True, n_atoms=5)
    graph = structure_to_graph(structure, CUTOFF)
    i, j = graph[keys.EDGE_INDEX].numpy()
    atoms = structure.atoms
    expected = atoms.positions[j] - atoms.positions[i] + graph[keys.CELL_SHIFTS].numpy() @ atoms.cell.array
    np.testing.assert_allclose(edge_vectors(graph).numpy(), expected, rtol=0, atol=1e-12)


def test_collate_different_labels_raises():
    rng = np.random.default_rng(5)
    first = structure_to_graph(random_structure(rng, periodic=False), CUTOFF)
    second_structure = random_structure(rng, periodic=False)
    del second_structure.labels[keys.STRESS]
    second = structure_to_graph(second_structure, CUTOFF)
    with pytest.raises(DataError, match="graph 1 has fields"):
        collate([first, second])


def test_collate_empty_raises():
    with pytest.raises(DataError, match="empty"):
        collate([])


def test_collate_single_graph_unchanged():
    graph = structure_to_graph(random_structure(np.random.default_rng(6), periodic=True), CUTOFF)
    batch = collate([graph])
    assert batch.keys() == graph.keys()
    for name in graph:
        torch.testing.assert_close(batch[name], graph[name], rtol=0, atol=0)


# Moving


def test_graph_to_casts_only_floats():
    _, _, batch = random_batch(0)
    moved = graph_to(batch, "cpu", torch.float32)
    assert moved[keys.POSITIONS].dtype == torch.float32
    assert moved[keys.ENERGY].dtype == torch.float32
    assert moved[keys.EDGE_INDEX].dtype == torch.int64
    assert moved[keys.PBC].dtype == torch.bool


def test_graph_to_keeps_dtype_by_default():
    _, _, batch = random_batch(1)
    moved = graph_to(batch, "cpu")
    for name, tensor in batch.items():
        assert moved[name].dtype == tensor.dtype, name
