"""Seeded random structures, symmetry operations and prediction helpers for physics tests.

Used by :mod:`physics_kit`; a test of another quantity (a dipole, an equivariant head) can use
them directly. Structures are ``ase.Atoms`` in Å; predictions are dicts of float64 numpy arrays,
one dict per structure.
"""

from __future__ import annotations

import math

import ase
import numpy as np
import torch
from ase.geometry import cellpar_to_cell

from mlpot import keys
from mlpot.data.graph import atoms_to_graph, collate
from mlpot.data.neighbours import neighbour_list
from mlpot.models.potential import Potential

#: Extra prediction entry: (n_atoms,) atomic energy minus the element's reference energy, in eV.
INTERACTION_ENERGIES = "interaction_energies"

#: How each prediction transforms when positions and cell are multiplied by an orthogonal
#: matrix Q: a ``vector`` v becomes v Qᵀ and a ``tensor`` T becomes Q T Qᵀ. Names not listed are
#: invariant scalars. Every vector listed is a polar vector, which also flips under reflections.
OUTPUT_KINDS = {
    keys.FORCES: "vector",
    keys.STRESS: "tensor",
    keys.DIPOLE: "vector",
    keys.ATOMIC_DIPOLES: "vector",
}

#: Magnitude below which an output counts as zero, so that its error is compared with this.
MAGNITUDE_FLOOR = 1e-6
#: Closest approach (Å) of two atoms in the random structures.
MIN_DISTANCE = 0.9

_PER_ATOM = set(keys.PER_ATOM_FIELDS) | {INTERACTION_ENERGIES}
_ENERGIES = (keys.ATOMIC_ENERGIES, INTERACTION_ENERGIES)


# Structures


def _numbers(rng: np.random.Generator, elements: list[int], count: int) -> np.ndarray:
    """Random atomic numbers that contain as many different elements as ``count`` allows."""
    distinct = rng.permutation(elements)[:count]
    rest = rng.choice(elements, count - len(distinct))
    return rng.permutation(np.concatenate([distinct, rest]).astype(int))


def _place(rng, numbers, draw_position, cell=np.zeros((3, 3)), pbc=(False,) * 3) -> ase.Atoms:
    """Add atoms one by one at positions from ``draw_position()``, rejecting any closer than MIN_DISTANCE."""
    positions: list[np.ndarray] = []
    for _ in numbers:
        for _attempt in range(10_000):
            trial = np.array(positions + [draw_position()])
            edges, _ = neighbour_list(trial, cell, np.asarray(pbc), MIN_DISTANCE)
            if edges.shape[1] == 0:
                positions.append(trial[-1])
                break
        else:
            raise RuntimeError(f"could not place {len(numbers)} atoms {MIN_DISTANCE} Å apart")
    return ase.Atoms(numbers=numbers, positions=np.array(positions), cell=cell, pbc=pbc)


def random_molecule(rng: np.random.Generator, elements: list[int], count: int) -> ase.Atoms:
    """A molecule of ``count`` atoms in a cube of about 8 Å³ per atom, without a cell."""
    side = (8.0 * count) ** (1 / 3)
    return _place(rng, _numbers(rng, elements, count), lambda: rng.uniform(0.0, side, 3))


def random_cell(rng: np.random.Generator, elements: list[int], count: int, slab: bool = False) -> ase.Atoms:
    """A periodic triclinic cell of ``count`` atoms; with ``slab``, periodic along a and b only.

    Lattice vectors are 3.5 to 5 Å long with angles of 75° to 105°. A slab has a c vector of
    about 12 Å, tilted from the normal, and atoms within 3 Å of its bottom plane.
    """
    lengths = rng.uniform(3.5, 5.0, 3)
    angles = rng.uniform(75.0, 105.0, 3)
    cell = cellpar_to_cell(np.concatenate([lengths, angles]))
    numbers = _numbers(rng, elements, count)
    if not slab:
        return _place(rng, numbers, lambda: rng.uniform(0.0, 1.0, 3) @ cell, cell, (True, True, True))
    cell[2] = [rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), 12.0]

    def draw():
        in_plane = rng.uniform(0.0, 1.0, 2) @ cell[:2]
        return in_plane + np.array([0.0, 0.0, rng.uniform(0.0, 3.0)])

    return _place(rng, numbers, draw, cell, (True, True, False))


def molecule(numbers, positions) -> ase.Atoms:
    """A structure without a cell from atomic numbers and (n_atoms, 3) positions in Å."""
    return ase.Atoms(numbers=np.asarray(numbers, dtype=int), positions=np.asarray(positions, dtype=float))


# Symmetry operations


def random_unit_vector(rng: np.random.Generator) -> np.ndarray:
    """A (3,) direction drawn uniformly from the unit sphere."""
    vector = rng.normal(size=3)
    return vector / np.linalg.norm(vector)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A (3, 3) rotation matrix drawn uniformly (Haar measure), with determinant +1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_improper_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation followed by a mirror through a random plane: determinant -1."""
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    mirror = np.eye(3) - 2.0 * np.outer(normal, normal)
    return mirror @ random_rotation(rng)


def permutation_of_identical_atoms(rng: np.random.Generator, numbers: np.ndarray) -> np.ndarray:
    """Indices that shuffle the atoms of each element among themselves."""
    order = np.arange(len(numbers))
    for element in np.unique(numbers):
        same = np.flatnonzero(numbers == element)
        order[same] = rng.permutation(same)
    return order


def rotated(atoms: ase.Atoms, matrix: np.ndarray) -> ase.Atoms:
    """Copy of ``atoms`` with positions and lattice vectors (rows) multiplied by ``matrix``."""
    moved = atoms.copy()
    moved.positions = atoms.positions @ matrix.T
    moved.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    return moved


def translated(atoms: ase.Atoms, shift: np.ndarray) -> ase.Atoms:
    """Copy of ``atoms`` with every position moved by ``shift`` (Å)."""
    moved = atoms.copy()
    moved.positions = atoms.positions + shift
    return moved


def displaced(atoms: ase.Atoms, atom: int, axis: int, step: float) -> ase.Atoms:
    """Copy of ``atoms`` with one Cartesian coordinate moved by ``step`` (Å)."""
    moved = atoms.copy()
    positions = moved.positions
    positions[atom, axis] += step
    moved.positions = positions
    return moved


def deformed(atoms: ase.Atoms, row: int, column: int, step: float) -> ase.Atoms:
    """Copy of ``atoms`` with positions and cell multiplied by I + step·e_row e_columnᵀ.

    As in :class:`~mlpot.models.potential.Potential`, positions are row vectors, so
    d E / d step over the volume is stress[row, column].
    """
    deformation = np.eye(3)
    deformation[row, column] += step
    moved = atoms.copy()
    moved.positions = atoms.positions @ deformation
    moved.set_cell(atoms.cell.array @ deformation, scale_atoms=False)
    return moved


def rotate_prediction(prediction: dict, matrix: np.ndarray) -> dict:
    """Return the prediction expected after positions and cell are multiplied by ``matrix``."""
    moved = {}
    for name, value in prediction.items():
        kind = OUTPUT_KINDS.get(name, "scalar")
        if kind == "vector":
            moved[name] = value @ matrix.T
        elif kind == "tensor":
            moved[name] = matrix @ value @ matrix.T
        else:
            moved[name] = value
    return moved


def permute_prediction(prediction: dict, order: np.ndarray) -> dict:
    """Return the prediction expected after the atoms are reordered as ``atoms[order]``."""
    return {name: value[order] if name in _PER_ATOM else value for name, value in prediction.items()}


# Models and predictions


def randomise_parameters(module: torch.nn.Module, seed: int, gain: float = 1.5) -> None:
    """Draw every parameter from N(0, gain² / fan_in) with a seeded generator.

    ``fan_in`` is the last dimension of a matrix and 1 for a vector. Default initialisations can
    leave a model almost constant, which hides errors behind round-off. With the invariant model,
    a gain of 1.5 gives per-atom interaction energies and forces of order 0.1, and 2 gives
    outputs above 1000, because the invariants square the features.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter.shape[-1] if parameter.ndim > 1 else 1
            values = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_(values * gain / math.sqrt(fan_in))


def predict(potential: Potential, structures: list[ase.Atoms], stress: bool = False) -> list[dict[str, np.ndarray]]:
    """Evaluate ``structures`` as one batch and split the outputs per structure.

    Each dict has the potential's outputs as float64 numpy arrays (energy as a 0-d array) plus
    :data:`INTERACTION_ENERGIES`. With ``stress``, periodic structures get their stress, while
    structures without periodicity get none.
    """
    batch = collate([atoms_to_graph(atoms, potential.cutoff) for atoms in structures])
    outputs = potential(batch, compute_forces=True, compute_stress=stress)
    references = torch.tensor(potential.reference_energies, dtype=torch.float64)
    species = potential.species(batch[keys.ATOMIC_NUMBERS])
    outputs[INTERACTION_ENERGIES] = outputs[keys.ATOMIC_ENERGIES].to(torch.float64) - references[species]

    counts = batch[keys.NUM_ATOMS].tolist()
    starts = np.cumsum([0] + counts)
    predictions = []
    for index, atoms in enumerate(structures):
        prediction = {}
        for name, value in outputs.items():
            value = value.detach().to(torch.float64).numpy()
            if name in _PER_ATOM:
                prediction[name] = value[starts[index] : starts[index + 1]]
            elif name == keys.STRESS and not atoms.pbc.any():
                continue
            else:
                prediction[name] = value[index]
        predictions.append(prediction)
    return predictions


def magnitude(prediction: dict[str, np.ndarray], name: str) -> float:
    """Scale of an output that errors are measured against.

    Energy: the sum of the absolute interaction energies, as that sum's round-off grows with the
    summands. Atomic energies: the RMS of the interaction energies. Other outputs: their RMS.
    """
    interaction = prediction[INTERACTION_ENERGIES]
    if name == keys.ENERGY:
        return float(np.abs(interaction).sum())
    if name in _ENERGIES:
        return float(np.sqrt(np.mean(interaction**2))) if interaction.size else 0.0
    value = np.asarray(prediction[name])
    return float(np.sqrt(np.mean(value**2))) if value.size else 0.0


def assert_predictions_close(actual: dict, expected: dict, tolerance: float, where: str) -> None:
    """Assert that both predictions have the same outputs, each within ``tolerance`` of its magnitude."""
    assert sorted(actual) == sorted(expected), f"{where}: outputs {sorted(actual)} differ from {sorted(expected)}"
    for name in expected:
        scale = max(magnitude(expected, name), MAGNITUDE_FLOOR)
        error = float(np.abs(np.asarray(actual[name]) - np.asarray(expected[name])).max(initial=0.0))
        assert error <= tolerance * scale, (
            f"{where}: {name} differs by {error:.3g}, more than {tolerance:g} of its magnitude {scale:.3g}"
        )
