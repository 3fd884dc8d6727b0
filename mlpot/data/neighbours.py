"""Neighbour lists within a cutoff, for molecules and for fully or partly periodic cells."""

from __future__ import annotations

import numpy as np
import vesin


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Find every ordered pair of atoms closer than ``cutoff`` (Å), periodic images included.

    Args:
        positions: (n_atoms, 3) Cartesian positions in Å; atoms may lie outside the cell.
        cell: (3, 3) lattice vectors as rows, in Å. Ignored when no direction is periodic.
        pbc: (3,) periodicity along each lattice vector.
        cutoff: cutoff radius in Å.

    Returns:
        ``edge_index`` (2, n_edges) int64 with the centre atom i in row 0 and the neighbour j in
        row 1, and ``cell_shifts`` (n_edges, 3) int64 such that the edge vector is
        ``positions[j] - positions[i] + cell_shifts @ cell``. Both (i, j) and (j, i) appear.
        There is no cap on the number of neighbours. A cell shorter than the cutoff gives
        several images of the same pair, and an atom can be its own neighbour through an image.
        Pairs are sorted by centre atom, then neighbour.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if len(positions) == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)

    if pbc.any():
        box = np.ascontiguousarray(cell, dtype=np.float64).reshape(3, 3)
    else:
        # A cell without periodicity has no effect, so vesin gets none.
        box = np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, shifts = calculator.compute(positions, box, pbc, quantities="ijS")
    edge_index = np.stack([i, j]).astype(np.int64, copy=False)
    return edge_index, shifts.astype(np.int64, copy=False)
