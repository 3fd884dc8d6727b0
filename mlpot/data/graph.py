"""Atomic graphs: one structure as a dict of tensors, and batches of several.

The fields and the edge convention are defined in :mod:`mlpot.keys`. Positions, cells and labels
stay float64 here; a model casts them to its own dtype.
"""

from __future__ import annotations

import ase
import numpy as np
import torch

from mlpot import keys
from mlpot.data.labels import Structure
from mlpot.data.neighbours import neighbour_list
from mlpot.errors import DataError

AtomicGraph = dict[str, torch.Tensor]


def atoms_to_graph(
    atoms: ase.Atoms, cutoff: float, labels: dict[str, np.ndarray] | None = None, total_charge: float | None = None
) -> AtomicGraph:
    """Build the graph of one structure, with its neighbour list within ``cutoff`` (Å).

    ``labels`` (mlpot units, as in :class:`~mlpot.data.labels.Structure`) become per-structure or
    per-atom fields with a leading batch axis where the field is per structure. ``total_charge``
    overrides the charge in ``labels``; without either, the structure is neutral.
    """
    labels = labels or {}
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = atoms.cell.array if pbc.any() else np.zeros((3, 3))
    edge_index, cell_shifts = neighbour_list(atoms.positions, cell, pbc, cutoff)

    graph: AtomicGraph = {
        keys.POSITIONS: torch.tensor(atoms.positions, dtype=torch.float64),
        keys.ATOMIC_NUMBERS: torch.tensor(atoms.numbers, dtype=torch.int64),
        keys.CELL: torch.tensor(cell, dtype=torch.float64).reshape(1, 3, 3),
        keys.PBC: torch.tensor(pbc).reshape(1, 3),
        keys.BATCH: torch.zeros(len(atoms), dtype=torch.int64),
        keys.NUM_ATOMS: torch.tensor([len(atoms)], dtype=torch.int64),
        keys.EDGE_INDEX: torch.from_numpy(edge_index),
        keys.CELL_SHIFTS: torch.from_numpy(cell_shifts).to(torch.float64),
    }

    charge = total_charge if total_charge is not None else labels.get(keys.TOTAL_CHARGE, 0.0)
    graph[keys.TOTAL_CHARGE] = torch.tensor([float(charge)], dtype=torch.float64)
    for name, value in labels.items():
        if name == keys.TOTAL_CHARGE:
            continue
        tensor = torch.as_tensor(np.asarray(value), dtype=torch.float64)
        graph[name] = tensor if name in keys.PER_ATOM_FIELDS else tensor.unsqueeze(0)
    return graph


def structure_to_graph(structure: Structure, cutoff: float) -> AtomicGraph:
    """Build the graph of a labelled structure; see :func:`atoms_to_graph`."""
    return atoms_to_graph(structure.atoms, cutoff, structure.labels)


def collate(graphs: list[AtomicGraph]) -> AtomicGraph:
    """Join graphs into one batch graph.

    Per-atom and per-structure fields are concatenated; edge indices are offset by the number of
    atoms before each graph, and ``batch`` holds each atom's structure index. Every graph must
    carry the same fields (the same labels).
    """
    if not graphs:
        raise DataError("cannot collate an empty list of graphs")
    names = set(graphs[0])
    for position, graph in enumerate(graphs[1:], start=1):
        if set(graph) != names:
            raise DataError(
                f"graph {position} has fields {sorted(graph)}, but graph 0 has {sorted(names)}; "
                "every structure in a batch needs the same labels"
            )

    batch: AtomicGraph = {}
    atom_counts = torch.stack([graph[keys.NUM_ATOMS][0] for graph in graphs])
    offsets = torch.cumsum(atom_counts, 0) - atom_counts
    batch[keys.EDGE_INDEX] = torch.cat(
        [graph[keys.EDGE_INDEX] + offset for graph, offset in zip(graphs, offsets)], dim=1
    )
    batch[keys.BATCH] = torch.repeat_interleave(torch.arange(len(graphs)), atom_counts)
    for name in names - {keys.EDGE_INDEX, keys.BATCH}:
        batch[name] = torch.cat([graph[name] for graph in graphs], dim=0)
    return batch


def edge_vectors(graph: AtomicGraph) -> torch.Tensor:
    """Return the (n_edges, 3) edge vectors of a graph or batch, in Å, in the dtype of its positions.

    Each vector points from the centre ``EDGE_INDEX[0]`` to the neighbour ``EDGE_INDEX[1]`` through
    the periodic image given by its cell shift; see :mod:`mlpot.keys`.
    """
    positions = graph[keys.POSITIONS]
    centres, neighbours = graph[keys.EDGE_INDEX]
    cells = graph[keys.CELL].to(positions.dtype)[graph[keys.BATCH][centres]]
    shifts = torch.einsum("ek,ekx->ex", graph[keys.CELL_SHIFTS].to(positions.dtype), cells)
    return positions[neighbours] - positions[centres] + shifts


def graph_to(graph: AtomicGraph, device: torch.device | str, dtype: torch.dtype | None = None) -> AtomicGraph:
    """Move a graph to ``device``; when ``dtype`` is given, cast its floating-point fields too."""
    moved = {}
    for name, tensor in graph.items():
        if dtype is not None and tensor.is_floating_point():
            moved[name] = tensor.to(device=device, dtype=dtype)
        else:
            moved[name] = tensor.to(device=device)
    return moved
