"""Physics checks that every mlpot energy model must pass, reusable by any model's tests.

A model's test module subclasses :class:`EnergyModelChecks` and defines ``make_potential``::

    from physics_kit import EnergyModelChecks, randomise_parameters

    class TestMyModelPhysics(EnergyModelChecks):
        def make_potential(self, dtype: str) -> Potential:
            potential = Potential(ModelConfig(model="my_model", dtype=dtype, ...), ...)
            randomise_parameters(potential, seed=0)
            return potential

pytest then runs every check in float32 and float64 (the ``dtype`` fixture), each with its own
relative tolerance, on seeded random molecules, triclinic cells and slabs built from the
model's elements. Finite-difference checks run in float64 only, because float32 round-off
divided by a small step swamps the derivative. Outputs that a model adds (charges, atomic
dipoles, dipole) are compared wherever :data:`OUTPUT_KINDS` defines how they transform.

The helpers for structures, symmetry operations and predictions live in
:mod:`physics_structures`, so that a check of another quantity can reuse them.

Errors are measured relative to the magnitude of the compared output: the RMS of a force or
stress array, and the sum of the absolute per-atom interaction energies for an energy.
``test_outputs_not_trivial`` makes sure that magnitude is large enough for this to mean something.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_structures import (
    INTERACTION_ENERGIES,
    OUTPUT_KINDS,
    assert_predictions_close,
    deformed,
    displaced,
    magnitude,
    molecule,
    permutation_of_identical_atoms,
    permute_prediction,
    predict,
    random_cell,
    random_improper_rotation,
    random_molecule,
    random_rotation,
    random_unit_vector,
    randomise_parameters,
    rotate_prediction,
    rotated,
    translated,
)

from mlpot import keys
from mlpot.data.graph import atoms_to_graph, collate
from mlpot.models.potential import Potential

__all__ = ["EnergyModelChecks", "OUTPUT_KINDS", "randomise_parameters"]

#: Random draws of each symmetry operation.
NUM_DRAWS = 3
#: Interaction energies (eV) and forces (eV/Å) below this on a dense molecule mean a nearly
#: constant model, whose float32 round-off would hide real errors.
MIN_OUTPUT = 1e-3


class EnergyModelChecks:
    """Base class of a model's physics tests; a subclass defines :meth:`make_potential`.

    A subclass may override the tolerances below, each relative to the compared output's
    magnitude, where its model's round-off differs.
    """

    #: Allowed error of a prediction, per model dtype. The invariant model's float32 forces
    #: differ by up to 1.2e-5 of their RMS after a rotation of a periodic cell.
    tolerances = {"float32": 1e-4, "float64": 1e-9}
    #: Allowed outlier of the cutoff scan, per model dtype. The smooth curve gives outliers of
    #: about step³ times the third derivative (2e-8 for the invariant model with 0.002 Å steps).
    #: Float32 round-off of the forces gives up to 7e-5, so float32 catches only jumps, while
    #: float64 also catches kinks.
    jump_tolerances = {"float32": 1e-3, "float64": 1e-5}
    #: Allowed error of a central finite difference in float64.
    finite_difference_tolerance = 1e-6

    def make_potential(self, dtype: str) -> Potential:
        """Build the potential under test with ``dtype`` ("float32" or "float64") and random weights."""
        raise NotImplementedError("a subclass of EnergyModelChecks must define make_potential(dtype)")

    @pytest.fixture(params=["float32", "float64"])
    def dtype(self, request) -> str:
        return request.param

    @pytest.fixture
    def potential(self, dtype) -> Potential:
        return self.make_potential(dtype)

    @pytest.fixture
    def potential64(self) -> Potential:
        return self.make_potential("float64")

    @pytest.fixture
    def tolerance(self, dtype) -> float:
        return self.tolerances[dtype]

    def structures(self, potential: Potential, seed: int) -> list:
        """A random molecule, a random triclinic cell and a random slab (pbc T T F)."""
        rng = np.random.default_rng(seed)
        return [
            random_molecule(rng, potential.elements, 8),
            random_cell(rng, potential.elements, 5),
            random_cell(rng, potential.elements, 6, slab=True),
        ]

    # Symmetry

    def test_outputs_not_trivial(self, potential):
        structure = random_molecule(np.random.default_rng(0), potential.elements, 8)
        (prediction,) = predict(potential, [structure])
        assert magnitude(prediction, keys.FORCES) > MIN_OUTPUT
        assert magnitude(prediction, INTERACTION_ENERGIES) > MIN_OUTPUT * len(structure)

    def check_operation(self, potential, tolerance, seed, transform, name):
        """Compare predictions of transformed structures with the transformed predictions."""
        rng = np.random.default_rng(seed)
        for draw in range(NUM_DRAWS):
            originals = self.structures(potential, seed=1000 * seed + draw)
            expected_outputs = predict(potential, originals)
            for atoms, expected in zip(originals, expected_outputs):
                moved, transform_expected = transform(rng, atoms)
                (actual,) = predict(potential, [moved])
                where = f"{name} {draw} of {atoms.get_chemical_formula()} (pbc {atoms.pbc.tolist()})"
                assert_predictions_close(actual, transform_expected(expected), tolerance, where)

    def test_rotation(self, potential, tolerance):
        def transform(rng, atoms):
            matrix = random_rotation(rng)
            return rotated(atoms, matrix), lambda prediction: rotate_prediction(prediction, matrix)

        self.check_operation(potential, tolerance, 1, transform, "rotation")

    def test_reflection(self, potential, tolerance):
        def transform(rng, atoms):
            matrix = random_improper_rotation(rng)
            return rotated(atoms, matrix), lambda prediction: rotate_prediction(prediction, matrix)

        self.check_operation(potential, tolerance, 2, transform, "improper rotation")

    def test_translation(self, potential, tolerance):
        def transform(rng, atoms):
            return translated(atoms, rng.uniform(-10.0, 10.0, 3)), lambda prediction: prediction

        self.check_operation(potential, tolerance, 3, transform, "translation")

    def test_permutation(self, potential, tolerance):
        def transform(rng, atoms):
            order = permutation_of_identical_atoms(rng, atoms.numbers)
            return atoms[order], lambda prediction: permute_prediction(prediction, order)

        self.check_operation(potential, tolerance, 4, transform, "permutation of identical atoms")

    def test_reordering(self, potential, tolerance):
        def transform(rng, atoms):
            order = rng.permutation(len(atoms))
            return atoms[order], lambda prediction: permute_prediction(prediction, order)

        self.check_operation(potential, tolerance, 5, transform, "reordering of atoms")

    # Derivatives (float64)

    def test_forces_finite_difference(self, potential64):
        step = 1e-4
        for atoms in self.structures(potential64, seed=6):
            (prediction,) = predict(potential64, [atoms])
            numerical = np.zeros((len(atoms), 3))
            for atom in range(len(atoms)):
                for axis in range(3):
                    plus, minus = (displaced(atoms, atom, axis, sign * step) for sign in (1, -1))
                    energies = [p[keys.ENERGY] for p in predict(potential64, [plus, minus])]
                    numerical[atom, axis] = -(energies[0] - energies[1]) / (2 * step)
            error = np.abs(numerical - prediction[keys.FORCES]).max()
            allowed = self.finite_difference_tolerance * magnitude(prediction, keys.FORCES)
            assert error <= allowed, f"forces of {atoms.get_chemical_formula()} differ from -dE/dr by {error:.3g} eV/Å"

    def check_stress_finite_difference(self, potential, atoms):
        step = 1e-5
        (prediction,) = predict(potential, [atoms], stress=True)
        volume = abs(np.linalg.det(atoms.cell.array))
        numerical = np.zeros((3, 3))
        for row in range(3):
            for column in range(3):
                plus, minus = (deformed(atoms, row, column, sign * step) for sign in (1, -1))
                energies = [p[keys.ENERGY] for p in predict(potential, [plus, minus])]
                numerical[row, column] = (energies[0] - energies[1]) / (2 * step) / volume
        error = np.abs(numerical - prediction[keys.STRESS]).max()
        allowed = self.finite_difference_tolerance * magnitude(prediction, keys.STRESS)
        assert error <= allowed, f"stress differs from (1/V) dE/dε by {error:.3g} eV/Å³ (pbc {atoms.pbc.tolist()})"

    def test_stress_bulk(self, potential64):
        atoms = random_cell(np.random.default_rng(7), potential64.elements, 5)
        self.check_stress_finite_difference(potential64, atoms)

    def test_stress_slab(self, potential64):
        # The stress of a slab is divided by the whole cell volume, vacuum included.
        atoms = random_cell(np.random.default_rng(8), potential64.elements, 6, slab=True)
        self.check_stress_finite_difference(potential64, atoms)

    # Cutoff

    def test_cutoff_continuity(self, potential, dtype, tolerance):
        cutoff = potential.cutoff
        rng = np.random.default_rng(9)
        first, second, third = rng.choice(potential.elements, 3)
        direction = random_unit_vector(rng)
        # The second atom sits on the far side of the first, so the third atom only ever
        # neighbours the first one, and the angle at the first atom enters while it is inside.
        away = -direction + 0.5 * random_unit_vector(rng)
        bond = 1.3 * away / np.linalg.norm(away)
        distances = cutoff + np.linspace(-0.1, 0.1, 101)

        def trimer(distance):
            positions = [np.zeros(3), bond, distance * direction]
            return molecule([first, second, third], positions)

        scan = predict(potential, [trimer(distance) for distance in distances])
        for name in scan[0]:
            values = np.stack([np.asarray(prediction[name]) for prediction in scan])
            steps = np.diff(values, axis=0)
            # A smooth curve has near-equal neighbouring steps, whereas a jump makes one step stand out.
            outliers = np.abs(steps[1:-1] - 0.5 * (steps[:-2] + steps[2:])).max()
            allowed = self.jump_tolerances[dtype] * max(magnitude(prediction, name) for prediction in scan)
            assert outliers <= allowed, f"{name} jumps by {outliers:.3g} while the third atom crosses the cutoff"

        # Energies and forces converge at the cutoff. Outputs such as the dipole move with the atom.
        # The envelope leaves forces of order (1 - r/r_c)² inside the cutoff: 1e-6 Å keeps them
        # below float64 round-off, while float32 can still tell the two positions apart.
        inside, outside = predict(potential, [trimer(cutoff - 1e-6), trimer(cutoff + 1e-6)])
        converging = (keys.ENERGY, keys.ATOMIC_ENERGIES, INTERACTION_ENERGIES, keys.FORCES)
        assert_predictions_close(
            {name: inside[name] for name in converging},
            {name: outside[name] for name in converging},
            tolerance,
            "third atom 1e-6 Å inside and outside the cutoff",
        )
        (pair,) = predict(potential, [molecule([first, second], [np.zeros(3), bond])])
        reference = potential.reference_energies[potential.elements.index(int(third))]
        allowed = tolerance * magnitude(pair, keys.ENERGY)
        assert outside[keys.ENERGY] == pytest.approx(pair[keys.ENERGY] + reference, abs=allowed)
        assert np.all(outside[keys.FORCES][2] == 0.0)

    # Atoms without neighbours

    def check_no_neighbours(self, potential, atoms):
        (prediction,) = predict(potential, [atoms], stress=bool(atoms.pbc.any()))
        references = [potential.reference_energies[potential.elements.index(int(z))] for z in atoms.numbers]
        assert prediction[keys.ENERGY] == pytest.approx(sum(references), rel=1e-12)
        assert np.all(prediction[keys.FORCES] == 0.0)
        if atoms.pbc.any():
            assert np.all(prediction[keys.STRESS] == 0.0)

    def test_single_atom(self, potential):
        for element in potential.elements:
            self.check_no_neighbours(potential, molecule([element], [np.zeros(3)]))

    def test_single_atom_in_cell(self, potential):
        atoms = molecule([potential.elements[0]], [np.full(3, 0.5)])
        atoms.cell = np.eye(3) * (potential.cutoff + 1.0)
        atoms.pbc = True
        self.check_no_neighbours(potential, atoms)

    def test_dimer_beyond_cutoff(self, potential):
        rng = np.random.default_rng(10)
        numbers = rng.choice(potential.elements, 2)
        distance = potential.cutoff + 0.01
        self.check_no_neighbours(potential, molecule(numbers, [np.zeros(3), distance * random_unit_vector(rng)]))

    def test_lone_atom_in_molecule(self, potential, tolerance):
        rng = np.random.default_rng(11)
        cluster = random_molecule(rng, potential.elements, 6)
        lone = molecule([potential.elements[-1]], [cluster.positions.max(axis=0) + 2.0 * potential.cutoff])
        (alone,), (joined,) = predict(potential, [cluster]), predict(potential, [cluster + lone])
        reference = potential.reference_energies[-1]
        allowed = tolerance * magnitude(alone, keys.ENERGY)
        assert joined[keys.ENERGY] == pytest.approx(alone[keys.ENERGY] + reference, abs=allowed)
        assert joined[INTERACTION_ENERGIES][-1] == 0.0
        assert np.all(joined[keys.FORCES][-1] == 0.0)

    def test_gradients_without_neighbours(self, potential):
        rng = np.random.default_rng(12)
        lonely = [
            molecule([potential.elements[0]], [np.zeros(3)]),
            molecule(rng.choice(potential.elements, 2), [np.zeros(3), (potential.cutoff + 0.5) * random_unit_vector(rng)]),
        ]
        for structures in (lonely, lonely + [random_molecule(rng, potential.elements, 5)]):
            potential.zero_grad()
            batch = collate([atoms_to_graph(atoms, potential.cutoff) for atoms in structures])
            outputs = potential.train()(batch, compute_forces=True, create_graph=True)
            targets = torch.tensor([atoms.get_global_number_of_atoms() * -1.0 for atoms in structures], dtype=torch.float64)
            loss = (outputs[keys.ENERGY] - targets).pow(2).mean() + outputs[keys.FORCES].pow(2).mean()
            loss.backward()
            for name, parameter in potential.named_parameters():
                if parameter.grad is not None:
                    assert torch.isfinite(parameter.grad).all(), f"gradient of {name} is not finite"

    # Batches and supercells

    def test_batch_matches_single(self, potential, tolerance):
        rng = np.random.default_rng(13)
        structures = self.structures(potential, seed=13) + [molecule([potential.elements[0]], [np.zeros(3)])]
        singles = [predict(potential, [atoms], stress=True)[0] for atoms in structures]
        for draw in range(NUM_DRAWS):
            order = rng.permutation(len(structures))
            batched = predict(potential, [structures[k] for k in order], stress=True)
            for position, k in enumerate(order):
                where = f"structure {k} at position {position} of batch {draw}"
                assert_predictions_close(batched[position], singles[k], tolerance, where)

    def test_supercell_energy_per_atom(self, potential, tolerance):
        from ase.build import make_supercell

        cell = random_cell(np.random.default_rng(14), potential.elements, 4)
        (unit,) = predict(potential, [cell], stress=True)
        for matrix in ([[2, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 1, 0], [0, 2, 0], [1, 0, 1]], np.diag([2, 2, 2])):
            # "cell-major" order lists all atoms of one copy of the cell before the next copy.
            supercell = make_supercell(cell, np.asarray(matrix), order="cell-major")
            (larger,) = predict(potential, [supercell], stress=True)
            copies = len(supercell) // len(cell)
            allowed = tolerance * magnitude(unit, keys.ENERGY)
            assert larger[keys.ENERGY] / copies == pytest.approx(unit[keys.ENERGY], abs=allowed)
            forces = larger[keys.FORCES].reshape(copies, len(cell), 3)
            force_error = np.abs(forces - unit[keys.FORCES]).max()
            assert force_error <= tolerance * magnitude(unit, keys.FORCES)
            stress_error = np.abs(larger[keys.STRESS] - unit[keys.STRESS]).max()
            assert stress_error <= tolerance * magnitude(unit, keys.STRESS)
