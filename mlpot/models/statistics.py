"""Statistics of the training split that a potential is built from.

Three numbers set the scale of a potential before training (see :mod:`mlpot.models.potential`):

- per-element reference energies E0[Z] in eV, from isolated-atom energies when a file gives them,
  otherwise a least-squares fit of E ≈ Σ_Z n_Z E0[Z] on the training energies;
- the energy scale s in eV: the RMS of the training force components (their value in eV/Å,
  taken as eV), or the RMS of the per-atom energy residual when no forces are given;
- the average number of neighbours per atom within the cutoff, which normalises the neighbour
  sums of the interaction blocks.

Only the training split may go in, so that validation and test errors stay honest.

Some problems leave the statistics usable but doubtful: a rank-deficient fit, an isolated-atom
energy for an element that no training structure contains, or numbers that point to an
undeclared unit. They raise a :class:`StatisticsWarning` through :func:`warnings.warn`, so that a
caller or a test can escalate or catch them. Where each number comes from is logged at INFO level.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpot import keys
from mlpot.data.labels import Structure
from mlpot.data.neighbours import neighbour_list
from mlpot.data.validation import symbol
from mlpot.errors import DataError

logger = logging.getLogger(__name__)

#: Sources of the reference energies, as stored in :attr:`Statistics.reference_source`.
REFERENCES_FROM_ISOLATED_ATOMS = "isolated_atoms"
REFERENCES_FROM_FIT = "least_squares"
REFERENCES_ZERO = "zero"

#: Sources of the energy scale, as stored in :attr:`Statistics.scale_source`.
SCALE_FROM_FORCES = "forces"
SCALE_FROM_ENERGY_RESIDUAL = "energy_residual"
SCALE_DEFAULT = "default"

#: Largest plausible interaction shift in eV per atom. A bonded atom lies about 1 to 10 eV below
#: its isolated energy, so a larger shift means that the training energies and the isolated-atom
#: energies are in different units. A kcal/mol energy read as eV is 23 times too large.
MAX_INTERACTION_SHIFT = 50.0
#: Largest plausible RMS of the training force components in eV/Å. Molecular dynamics data
#: typically have 0.5 to 3 eV/Å; forces in kcal/mol/Å read as eV/Å come out 23 times too large.
MAX_FORCE_RMS = 10.0


class StatisticsWarning(UserWarning):
    """Warned when the training split gives statistics that are usable but doubtful."""


@dataclass
class Statistics:
    """Reference energies, energy scale and neighbour count of a training split.

    Every field is a plain Python value, so :meth:`to_dict` can go into a model file.

    Attributes:
        elements: sorted atomic numbers: the union of the training and isolated-atom elements.
        reference_energies: energy of each element in ``elements``, in eV.
        energy_scale: scale s of the network's per-atom output, in eV.
        avg_num_neighbours: mean number of neighbours per atom within the cutoff.
        reference_source: ``isolated_atoms``, ``least_squares`` or ``zero``.
        scale_source: ``forces``, ``energy_residual`` or ``default``.
        num_structures: training structures the statistics were computed on.
        interaction_shifts: mean interaction energy of an atom of each element in a bonded
            environment, in eV (see :func:`interaction_shifts`); empty means zeros.
    """

    elements: list[int]
    reference_energies: list[float]
    energy_scale: float
    avg_num_neighbours: float
    reference_source: str = REFERENCES_FROM_FIT
    scale_source: str = SCALE_FROM_FORCES
    num_structures: int = 0
    interaction_shifts: list[float] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the fields as a dict of plain Python values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> Statistics:
        """Build statistics from :meth:`to_dict` output; raise ValueError for a missing or unknown key."""
        fields = dataclasses.fields(cls)
        names = {item.name for item in fields}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown statistics keys {unknown}; expected some of {sorted(names)}")
        required = {item.name for item in fields if item.default is dataclasses.MISSING}
        missing = sorted(required - set(values))
        if missing:
            raise ValueError(f"statistics keys {missing} are missing")
        return cls(**dict(values))

    def reference_of(self) -> dict[int, float]:
        """Map each atomic number to its reference energy in eV."""
        return dict(zip(self.elements, self.reference_energies))


def read_isolated_atoms(path: str | Path) -> dict[int, float]:
    """Read one-atom structures with their energies and map each atomic number to its energy in eV.

    Raises:
        DataError: the file is unreadable, a frame lacks its energy or has more than one atom, or
            one element has two different energies.
    """
    from mlpot.data.io import read_structures

    return isolated_atom_energies(read_structures(path, labels=(keys.ENERGY,)))


def isolated_atom_energies(structures: Sequence[Structure]) -> dict[int, float]:
    """Map each atomic number to the energy (eV) of its one-atom structure in ``structures``.

    Raises DataError, naming the frame, for a structure with other than one atom or without an
    energy, and for an element given twice with energies more than 1 µeV apart.
    """
    energies: dict[int, float] = {}
    first_seen: dict[int, str] = {}
    for structure in structures:
        if len(structure.atoms) != 1:
            raise DataError(
                f"{structure.where}: an isolated-atom structure must contain exactly one atom, this one has "
                f"{len(structure.atoms)}; remove it from the isolated-atom file"
            )
        if keys.ENERGY not in structure.labels:
            raise DataError(f"{structure.where}: the isolated atom has no energy label")
        number = int(structure.atoms.numbers[0])
        energy = float(structure.labels[keys.ENERGY])
        if number in energies and abs(energies[number] - energy) > 1e-6:
            raise DataError(
                f"{structure.where}: {symbol(number)} has energy {energy} eV, but {first_seen[number]} gives "
                f"{energies[number]} eV; keep one isolated-atom energy per element"
            )
        energies[number] = energy
        first_seen.setdefault(number, structure.where)
    return energies


def compute_statistics(
    train_structures: Sequence[Structure],
    cutoff: float,
    isolated_atoms: str | Path | Mapping[int, float] | Sequence[Structure] | None = None,
) -> Statistics:
    """Compute the statistics of the training split.

    Args:
        train_structures: training structures only, never validation or test ones.
        cutoff: cutoff radius of the model's neighbour list, in Å.
        isolated_atoms: isolated-atom energies as a file path, a mapping from atomic number to
            energy in eV, or one-atom structures. ``None`` fits the references by least squares.

    Raises:
        DataError: there are no training structures, or a training element has no isolated-atom
            energy.
    """
    if len(train_structures) == 0:
        raise DataError("cannot compute statistics without training structures")
    training_elements = sorted({int(z) for structure in train_structures for z in structure.atoms.numbers})

    if isolated_atoms is None:
        elements = training_elements
        references, reference_source = _fit_references(train_structures, elements)
    else:
        isolated, where = _isolated_energies(isolated_atoms)
        references, elements = _isolated_references(isolated, training_elements, where)
        reference_source = REFERENCES_FROM_ISOLATED_ATOMS

    energy_scale, scale_source = _energy_scale(train_structures, dict(zip(elements, references)))
    shifts = interaction_shifts(train_structures, elements, references)
    if reference_source == REFERENCES_FROM_ISOLATED_ATOMS:
        _check_interaction_shifts(elements, shifts)
    if scale_source == SCALE_FROM_FORCES:
        _check_force_scale(energy_scale)
    avg_num_neighbours = average_num_neighbours(train_structures, cutoff)
    logger.info(
        "statistics of %d training structures: reference energies from %s, energy scale %.6g eV from %s, "
        "%.3f neighbours per atom within %g Å",
        len(train_structures),
        reference_source,
        energy_scale,
        scale_source,
        avg_num_neighbours,
        cutoff,
    )
    return Statistics(
        elements=elements,
        reference_energies=references,
        energy_scale=energy_scale,
        avg_num_neighbours=avg_num_neighbours,
        reference_source=reference_source,
        scale_source=scale_source,
        num_structures=len(train_structures),
        interaction_shifts=shifts,
    )


def interaction_shifts(structures: Sequence[Structure], elements: list[int], references: list[float]) -> list[float]:
    """Fit the interaction energy per atom of each element: E - Σ E0 ≈ Σ_Z n_Z δ_Z, in eV.

    With isolated-atom references, the energy of a bonded atom lies several eV below its reference,
    and the potential adds δ_Z through a smooth coordination gate so that the network starts from
    the right offset (see :class:`mlpot.models.potential.Potential`). With fitted references the
    residuals average out and the shifts come out near zero. Uses the minimum-norm least-squares
    solution, which spreads the shift over elements that always occur together.
    """
    labelled = [structure for structure in structures if keys.ENERGY in structure.labels]
    if not labelled:
        return [0.0] * len(elements)
    reference_of = dict(zip(elements, references))
    counts = element_counts(labelled, elements)
    residuals = np.array(
        [float(s.labels[keys.ENERGY]) - sum(reference_of[int(z)] for z in s.atoms.numbers) for s in labelled]
    )
    solution, *_ = np.linalg.lstsq(counts, residuals, rcond=None)
    return [float(value) for value in solution]


def _check_interaction_shifts(elements: list[int], shifts: list[float]) -> None:
    """Warn when an interaction shift lies beyond ±MAX_INTERACTION_SHIFT eV per atom."""
    implausible = [(z, shift) for z, shift in zip(elements, shifts) if abs(shift) > MAX_INTERACTION_SHIFT]
    if not implausible:
        return
    values = ", ".join(f"{symbol(z)} {shift:+.4g} eV" for z, shift in implausible)
    warnings.warn(
        f"the mean energy per atom relative to the isolated-atom energies, (E - ΣE0)/atom, is {values}, beyond "
        f"±{MAX_INTERACTION_SHIFT:g} eV per atom; bonded atoms lie 1 to 10 eV below their isolated energy. The "
        "training energies and the isolated-atom energies are probably in different units: declare energy_unit "
        "for the training data and isolated_atoms_energy_unit for isolated_atoms_file",
        StatisticsWarning,
        stacklevel=3,
    )


def _check_force_scale(force_rms: float) -> None:
    """Warn when the RMS of the training force components exceeds MAX_FORCE_RMS eV/Å."""
    if force_rms <= MAX_FORCE_RMS:
        return
    warnings.warn(
        f"the RMS of the training force components is {force_rms:.4g} eV/Å, above {MAX_FORCE_RMS:g} eV/Å; "
        "molecular dynamics data typically have 0.5 to 3 eV/Å. The forces are probably in another unit: declare "
        "forces_unit, or energy_unit, which forces without a unit of their own follow (for example kcal/mol "
        "for kcal/mol/Å)",
        StatisticsWarning,
        stacklevel=3,
    )


def _isolated_energies(isolated_atoms) -> tuple[dict[int, float], str]:
    """Turn any accepted form of isolated-atom energies into a mapping and a name for messages."""
    if isinstance(isolated_atoms, (str, Path)):
        return read_isolated_atoms(isolated_atoms), str(isolated_atoms)
    if isinstance(isolated_atoms, Mapping):
        energies = {}
        for number, energy in isolated_atoms.items():
            if not 1 <= int(number) <= 118:
                raise DataError(f"isolated-atom energies: {number} is not an atomic number (1 to 118)")
            if not math.isfinite(float(energy)):
                raise DataError(f"isolated-atom energies: {symbol(int(number))} has a non-finite energy {energy}")
            energies[int(number)] = float(energy)
        return energies, "the isolated-atom energies"
    return isolated_atom_energies(isolated_atoms), "the isolated-atom structures"


def _isolated_references(
    isolated: dict[int, float], training_elements: list[int], where: str
) -> tuple[list[float], list[int]]:
    missing = [z for z in training_elements if z not in isolated]
    if missing:
        names = ", ".join(symbol(z) for z in missing)
        raise DataError(
            f"{where} give no energy for {names}, which the training structures contain; add a one-atom "
            "frame with its energy for each, or leave isolated_atoms_file empty to fit the reference "
            "energies on the training split"
        )
    unused = sorted(set(isolated) - set(training_elements))
    if unused:
        warnings.warn(
            f"{where} include {', '.join(symbol(z) for z in unused)}, which no training structure "
            "contains; the model keeps their reference energies, but has learned nothing about their "
            "interactions",
            StatisticsWarning,
            stacklevel=3,
        )
    elements = sorted(set(training_elements) | set(isolated))
    return [isolated[z] for z in elements], elements


def element_counts(structures: Sequence[Structure], elements: list[int]) -> np.ndarray:
    """Return the (n_structures, n_elements) count of each element in each structure."""
    column = {z: position for position, z in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for row, structure in enumerate(structures):
        for number in structure.atoms.numbers:
            counts[row, column[int(number)]] += 1
    return counts


def _fit_references(structures: Sequence[Structure], elements: list[int]) -> tuple[list[float], str]:
    """Least-squares reference energies from the training energies, or zeros when none are given."""
    labelled = [structure for structure in structures if keys.ENERGY in structure.labels]
    if not labelled:
        warnings.warn(
            "no training structure has an energy and no isolated-atom energies were given, so every "
            "reference energy is 0 eV; predicted total energies are then meaningless, but forces are not",
            StatisticsWarning,
            stacklevel=3,
        )
        return [0.0] * len(elements), REFERENCES_ZERO

    counts = element_counts(labelled, elements)
    energies = np.array([float(structure.labels[keys.ENERGY]) for structure in labelled])
    # lstsq returns the minimum-norm solution when the counts cannot separate the elements.
    solution, _, rank, _ = np.linalg.lstsq(counts, energies, rcond=None)
    if rank < len(elements):
        names = ", ".join(symbol(z) for z in elements)
        warnings.warn(
            f"the element counts of the {len(labelled)} training energies have rank {rank}, fewer than the "
            f"{len(elements)} elements ({names}), so the least-squares fit cannot separate their reference "
            "energies (for example when every structure has the same composition). The fitted references "
            "suit structures of the training compositions only; give isolated-atom energies "
            "(isolated_atoms_file) for a model that transfers to other compositions",
            StatisticsWarning,
            stacklevel=3,
        )
    return [float(value) for value in solution], REFERENCES_FROM_FIT


def _energy_scale(structures: Sequence[Structure], references: dict[int, float]) -> tuple[float, str]:
    """RMS of the force components, else of the per-atom energy residual, else 1 eV."""
    forces = [np.asarray(s.labels[keys.FORCES]).reshape(-1) for s in structures if keys.FORCES in s.labels]
    if forces:
        rms = float(np.sqrt(np.mean(np.square(np.concatenate(forces)))))
        if rms > 0 and math.isfinite(rms):
            return rms, SCALE_FROM_FORCES

    residuals = []
    for structure in structures:
        if keys.ENERGY in structure.labels:
            reference = sum(references[int(z)] for z in structure.atoms.numbers)
            residuals.append((float(structure.labels[keys.ENERGY]) - reference) / len(structure.atoms))
    if residuals:
        rms = float(np.sqrt(np.mean(np.square(residuals))))
        if rms > 0 and math.isfinite(rms):
            logger.info("no training forces: energy scale from the per-atom energy residual")
            return rms, SCALE_FROM_ENERGY_RESIDUAL

    warnings.warn(
        "the training split has neither non-zero forces nor energies that differ from the reference "
        "energies, so the energy scale falls back to 1 eV",
        StatisticsWarning,
        stacklevel=3,
    )
    return 1.0, SCALE_DEFAULT


def average_num_neighbours(structures: Sequence[Structure], cutoff: float) -> float:
    """Return the mean number of neighbours per atom within ``cutoff`` (Å), periodic images included.

    Falls back to 1 when no atom has a neighbour, because the interaction blocks divide by it.
    """
    num_edges = 0
    num_atoms = 0
    for structure in structures:
        atoms = structure.atoms
        edge_index, _ = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        num_edges += edge_index.shape[1]
        num_atoms += len(atoms)
    if num_edges == 0:
        logger.info("no training atom has a neighbour within %g Å: average neighbour count set to 1", cutoff)
        return 1.0
    return num_edges / num_atoms
