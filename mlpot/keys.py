"""Names of the fields of an atomic graph, with their shapes, dtypes and units.

An atomic graph is a plain ``dict[str, torch.Tensor]``. A batch of several structures is the
same dict with the structures concatenated (see :func:`mlpot.data.graph.collate`). Shapes use
``n_atoms`` (atoms in the batch), ``n_edges`` (directed edges in the batch) and ``n_graphs``
(structures in the batch).

Edge convention
---------------
``EDGE_INDEX[0]`` is the centre atom ``i`` and ``EDGE_INDEX[1]`` the neighbour ``j``. The edge
vector points from the centre to the neighbour, through the periodic image given by the cell
shift::

    EDGE_VECTORS[e] = POSITIONS[j] - POSITIONS[i] + CELL_SHIFTS[e] @ CELL[graph of i]

Every pair within the cutoff appears in both directions, (i, j) and (j, i), with opposite
vectors. Messages flow from ``j`` to ``i``: a sum over the edges whose centre is ``i`` gathers
the neighbourhood of ``i``. Odd-l spherical harmonics of the edge vector flip sign when this
convention is reversed, which ``tests/test_keys.py`` checks on a two-atom graph.

Dtypes: positions, cell and labels stay float64 in the data; a model casts them to its own
dtype. Integer fields are int64; PBC is bool.
"""

from __future__ import annotations

# Structure

#: (n_atoms, 3) float, Å. Cartesian positions, not wrapped into the cell.
POSITIONS = "positions"
#: (n_atoms,) int64. Atomic numbers Z.
ATOMIC_NUMBERS = "atomic_numbers"
#: (n_graphs, 3, 3) float, Å. Lattice vectors as rows; zeros for a structure without a cell.
CELL = "cell"
#: (n_graphs, 3) bool. Periodicity along each lattice vector.
PBC = "pbc"
#: (n_atoms,) int64. Index of the structure that each atom belongs to.
BATCH = "batch"
#: (n_graphs,) int64. Number of atoms in each structure.
NUM_ATOMS = "num_atoms"

# Neighbour list

#: (2, n_edges) int64. Row 0: centre atom i. Row 1: neighbour j. Indices into the batch.
EDGE_INDEX = "edge_index"
#: (n_edges, 3) float (whole numbers). Lattice-vector multiples added to the neighbour's position.
CELL_SHIFTS = "cell_shifts"
#: (n_edges, 3) float, Å. r_j - r_i + shift; computed by the model, not stored in the data.
EDGE_VECTORS = "edge_vectors"
#: (n_edges,) float, Å. Length of EDGE_VECTORS; computed by the model.
EDGE_LENGTHS = "edge_lengths"

# Labels (targets in the data) and predictions (outputs of a model) share these names.

#: (n_graphs,) float, eV. Total energy.
ENERGY = "energy"
#: (n_atoms,) float, eV. Energy of each atom; a prediction only.
ATOMIC_ENERGIES = "atomic_energies"
#: (n_atoms, 3) float, eV/Å. Forces, -dE/dr.
FORCES = "forces"
#: (n_graphs, 3, 3) float, eV/Å³. Stress (1/V) dE/dε in ASE's sign convention.
STRESS = "stress"
#: (n_graphs, 3) float, e·Å. Electric dipole moment.
DIPOLE = "dipole"
#: (n_graphs,) float, e. Total charge of the structure; 0 when the data does not give it.
TOTAL_CHARGE = "total_charge"
#: (n_atoms,) float, e. Partial charges; a prediction only.
CHARGES = "charges"
#: (n_atoms, 3) float, e·Å. Atomic dipoles; a prediction only.
ATOMIC_DIPOLES = "atomic_dipoles"

#: Labels that a dataset can provide, per structure or per atom.
LABELS = (ENERGY, FORCES, STRESS, DIPOLE)
#: Fields with one row per atom; the others with a leading axis are per structure.
PER_ATOM_FIELDS = (POSITIONS, ATOMIC_NUMBERS, BATCH, FORCES, ATOMIC_ENERGIES, CHARGES, ATOMIC_DIPOLES)
#: Fields with one row per structure.
PER_GRAPH_FIELDS = (CELL, PBC, NUM_ATOMS, ENERGY, STRESS, DIPOLE, TOTAL_CHARGE)
#: Fields with one row per edge (EDGE_INDEX has edges along its second axis).
PER_EDGE_FIELDS = (CELL_SHIFTS, EDGE_VECTORS, EDGE_LENGTHS)

#: Unit of each label and prediction, as written in every interface of the package.
UNITS = {
    POSITIONS: "Å",
    CELL: "Å",
    ENERGY: "eV",
    ATOMIC_ENERGIES: "eV",
    FORCES: "eV/Å",
    STRESS: "eV/Å³",
    DIPOLE: "e·Å",
    TOTAL_CHARGE: "e",
    CHARGES: "e",
    ATOMIC_DIPOLES: "e·Å",
}
