"""Neighbour lists within a cutoff, for molecules and for fully or partly periodic cells.

vesin computes the pairs, except for molecules of at most ``SMALL_MOLECULE_ATOMS`` atoms without
periodicity. For those, comparing all pairs directly is about ten times faster than preparing
vesin's box, and the cost of the box set-up matters in MD of one small molecule. This module hands it a fully periodic box with every position wrapped
into it. Each non-periodic direction becomes a vacuum-padded lattice vector, perpendicular to the
periodic ones and long enough that no image along it comes within the cutoff. This keeps three
failure modes of vesin 0.6 away from the caller:

- vesin rounds the cell grid of a box that is flat compared with the cutoff to zero cells along
  one axis. The process then dies of an integer division by zero (SIGFPE) instead of raising. A
  planar molecule several hundred Å wide, checked at the 0.1 Å contact distance, does this.
- Positions more than about 2**31 grid cells outside the cell overflow vesin's int32 cell index,
  and pairs are silently lost.
- A non-finite cell also kills the process.
"""

from __future__ import annotations

import numpy as np
import vesin

from mlpot.errors import DataError

# vesin 0.6 shrinks its cell grid to about this many cells, keeping the ratio of the grid sides
# (MAX_NUMBER_OF_CELLS in vesin/src/cpu_cell_list.cpp).
_VESIN_MAX_CELLS = 1e5
# Smallest number of grid cells along any axis, after that shrinking, accepted before the search
# radius handed to vesin grows. Zero crashes; the margin covers vesin's rounding of each side.
_MIN_GRID_CELLS = 4
#: Largest molecule (no periodic direction) whose pairs are found by comparing all of them.
SMALL_MOLECULE_ATOMS = 64


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Find every ordered pair of atoms closer than ``cutoff`` (Å), periodic images included.

    Args:
        positions: (n_atoms, 3) Cartesian positions in Å; atoms may lie outside the cell.
        cell: (3, 3) lattice vectors as rows, in Å. Rows along non-periodic directions are
            ignored, and so is the whole cell when no direction is periodic.
        pbc: (3,) periodicity along each lattice vector.
        cutoff: cutoff radius in Å.

    Returns:
        ``edge_index`` (2, n_edges) int64 with the centre atom i in row 0 and the neighbour j in
        row 1, and ``cell_shifts`` (n_edges, 3) int64 such that the edge vector is
        ``positions[j] - positions[i] + cell_shifts @ cell``. Shifts along non-periodic
        directions are zero. Both (i, j) and (j, i) appear. There is no cap on the number of
        neighbours. A cell shorter than the cutoff gives several images of the same pair, and an
        atom can be its own neighbour through an image. Edges are sorted by centre atom, then
        neighbour, then shift.

    Raises:
        DataError: positions or the periodic part of the cell are not finite, the periodic
            lattice vectors are linearly dependent, or the cutoff is not a positive number.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    _check_inputs(positions, cell, pbc, cutoff)
    if len(positions) == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    if not pbc.any() and len(positions) <= SMALL_MOLECULE_ATOMS:
        return _all_pairs(positions, cutoff)

    # vesin's grid cells are as wide as its search radius. A radius wider than the cutoff only
    # adds candidate pairs, which the distance filter below removes. So the radius grows to about
    # one atom per grid cell, which spares a 0.1 Å contact check on a small molecule a scan of
    # some 40 000 empty cells. It grows further while the grid would be too flat for vesin.
    search = float(cutoff)
    box = _padded_box(positions, cell, pbc, search)
    search = max(search, float(np.cbrt(abs(np.linalg.det(box)) / len(positions))))
    box = _padded_box(positions, cell, pbc, search)
    inverse = np.linalg.inv(box)
    while _smallest_grid_side(inverse, search) < _MIN_GRID_CELLS:
        search *= 2.0
        box = _padded_box(positions, cell, pbc, search)
        inverse = np.linalg.inv(box)

    # Wrap into the box: whole lattice vectors along periodic directions, and one common
    # translation along the padded ones, which changes no pair vector.
    fractional = positions @ inverse
    whole = np.where(pbc, np.floor(fractional), 0.0)
    translation = np.where(pbc, 0.0, fractional.min(axis=0))
    wrapped = np.ascontiguousarray((fractional - whole - translation) @ box)

    calculator = vesin.NeighborList(cutoff=search, full_list=True, sorted=False)
    i, j, shifts, distances = calculator.compute(wrapped, box, True, quantities="ijSd")
    keep = distances < cutoff
    i = i[keep].astype(np.int64)
    j = j[keep].astype(np.int64)

    # Undo the wrapping: r = w + whole @ box, so r_j - r_i + S @ box = w_j - w_i + S_vesin @ box
    # with S = S_vesin + whole_i - whole_j.
    whole = whole.astype(np.int64)
    shifts = shifts[keep].astype(np.int64) + whole[i] - whole[j]
    assert not shifts[:, ~pbc].any(), "a pair within the cutoff crossed a vacuum-padded direction"

    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    return np.stack([i[order], j[order]]), shifts[order]


def _all_pairs(positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the pairs of a molecule closer than ``cutoff`` by comparing every pair, sorted by i, then j."""
    distances = np.linalg.norm(positions[None, :, :] - positions[:, None, :], axis=-1)
    within = distances < cutoff
    np.fill_diagonal(within, False)
    i, j = np.nonzero(within)
    edge_index = np.stack([i, j]).astype(np.int64)
    return edge_index, np.zeros((edge_index.shape[1], 3), dtype=np.int64)


def _check_inputs(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise DataError(f"positions have shape {positions.shape}; expected (n_atoms, 3)")
    if not np.isfinite(positions).all():
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise DataError(f"position of atom {bad} is NaN or infinite: {positions[bad].tolist()}")
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise DataError(f"cutoff must be a positive number of Å, got {cutoff}")
    if not pbc.any():
        return

    periodic = cell[pbc]
    if not np.isfinite(periodic).all():
        raise DataError(f"the periodic lattice vectors contain NaN or infinite values: {periodic.tolist()}")
    singular_values = np.linalg.svd(periodic, compute_uv=False)
    if singular_values[-1] <= 1e-10 * max(singular_values[0], 1.0):
        raise DataError(
            f"the periodic lattice vectors {periodic.tolist()} (pbc {pbc.tolist()}) are zero or linearly "
            "dependent; give a cell with independent vectors along every periodic direction"
        )


def _padded_box(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, search: float) -> np.ndarray:
    """Return a (3, 3) box: the periodic rows of ``cell``, and padded vacuum along the others.

    The padded rows are orthonormal directions perpendicular to the periodic rows. Their length is
    the larger of the atoms' widest extent along them and the longest periodic row, plus twice
    ``search``. An image along a padded row is then farther than ``search``, and the box is not flat.
    """
    box = cell.copy()
    n_periodic = int(pbc.sum())
    if n_periodic == 3:
        return box

    # Right singular vectors beyond the rank of the periodic rows span their orthogonal
    # complement; with no periodic row they are the Cartesian axes.
    if n_periodic == 0:
        complement = np.eye(3)
    else:
        _, _, vt = np.linalg.svd(cell[pbc])
        complement = vt[n_periodic:]
    extents = np.ptp(positions @ complement.T, axis=0)
    longest_periodic = max((float(np.linalg.norm(row)) for row in cell[pbc]), default=0.0)
    length = max(longest_periodic, float(extents.max())) + 2.0 * search
    for row, direction in zip(np.flatnonzero(~pbc), complement):
        box[row] = direction * length
    return box


def _smallest_grid_side(inverse: np.ndarray, search: float) -> float:
    """Estimate the fewest cells along one axis of vesin's grid, or inf when vesin keeps its grid.

    ``inverse`` is the inverse of the box; the distance between opposite faces of the box is
    one over the norm of the matching column.
    """
    face_distances = 1.0 / np.linalg.norm(inverse, axis=0)
    counts = np.maximum(np.trunc(face_distances / search), 1.0)
    total = float(np.prod(counts))
    if total <= _VESIN_MAX_CELLS:
        return float("inf")
    return float(counts.min() * np.cbrt(_VESIN_MAX_CELLS / total))
