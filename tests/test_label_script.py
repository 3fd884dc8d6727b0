"""Tests of scripts/label_xtb.py: labels, round trip through extxyz, failures and atomic output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.data.labels import find_label

pytest.importorskip("tblite")
from tblite.ase import TBLite  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "label_xtb.py"


def run_script(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def with_reference_labels(atoms: ase.Atoms, seed: int) -> ase.Atoms:
    """Attach made-up energy and forces, standing in for the DFT labels of a dataset."""
    rng = np.random.default_rng(seed)
    atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3)))
    return atoms


def direct_results(atoms: ase.Atoms, charge: int = 0) -> dict:
    """Run tblite directly on ``atoms`` and return its results."""
    work = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions)
    work.calc = TBLite(method="GFN2-xTB", charge=charge, verbosity=0)
    work.get_dipole_moment()
    return work.calc.results


@pytest.fixture
def structures(tmp_path) -> tuple[Path, list[ase.Atoms]]:
    """Three molecules with reference labels; the hydroxide ion has a total charge of -1."""
    rng = np.random.default_rng(3)
    frames = []
    for seed, name in enumerate(("H2O", "CH3OH", "OH")):
        atoms = molecule(name)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape) + rng.normal(size=3)
        frames.append(with_reference_labels(atoms, seed))
    frames[2].info["charge"] = -1
    path = tmp_path / "input.xyz"
    ase.io.write(path, frames, format="extxyz")
    # Compare with the frames as written, whose positions are rounded to 1e-8 Å.
    return path, ase.io.read(path, index=":")


def test_round_trip(structures, tmp_path):
    path, frames = structures
    output = tmp_path / "labelled.xyz"
    result = run_script(path, output, "--energy", "--forces", "--charges")
    assert result.returncode == 0, result.stderr

    labelled = ase.io.read(output, index=":")
    assert len(labelled) == len(frames)
    for original, atoms in zip(frames, labelled):
        charge = int(original.info.get("charge", 0))
        expected = direct_results(original, charge)
        np.testing.assert_array_equal(atoms.numbers, original.numbers)
        np.testing.assert_allclose(atoms.positions, original.positions, atol=1e-12)
        np.testing.assert_allclose(find_label(atoms, "dipole"), expected["dipole"], atol=1e-6)
        np.testing.assert_allclose(atoms.info["xtb_energy"], expected["energy"], rtol=1e-10)
        np.testing.assert_allclose(atoms.arrays["xtb_forces"], expected["forces"], atol=1e-6)
        np.testing.assert_allclose(atoms.arrays["xtb_charges"], expected["charges"], atol=1e-6)


def test_reference_labels_kept(structures, tmp_path):
    path, frames = structures
    output = tmp_path / "labelled.xyz"
    result = run_script(path, output, "--energy", "--forces")
    assert result.returncode == 0, result.stderr

    for original, atoms in zip(frames, ase.io.read(output, index=":")):
        assert atoms.get_potential_energy() == pytest.approx(original.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(atoms.get_forces(), original.get_forces(), atol=1e-12)


def test_dipole_only_by_default(structures, tmp_path):
    path, _ = structures
    output = tmp_path / "labelled.xyz"
    assert run_script(path, output).returncode == 0

    atoms = ase.io.read(output, index=0)
    assert find_label(atoms, "dipole") is not None
    assert "xtb_energy" not in atoms.info
    assert "xtb_forces" not in atoms.arrays


def test_dipole_unit_is_e_angstrom(tmp_path):
    # Translating an ion by t changes its dipole by Q·t; in e·Å that is exactly -t for Q = -1.
    rng = np.random.default_rng(7)
    ion = molecule("OH")
    ion.info["charge"] = -1
    shift = rng.normal(scale=2.0, size=3)
    moved = ion.copy()
    moved.translate(shift)
    path = tmp_path / "ions.xyz"
    ase.io.write(path, [ion, moved], format="extxyz")
    output = tmp_path / "labelled.xyz"
    assert run_script(path, output).returncode == 0

    first, second = (find_label(atoms, "dipole") for atoms in ase.io.read(output, index=":"))
    np.testing.assert_allclose(second - first, -shift, atol=1e-4)


def failing_input(tmp_path) -> Path:
    """Three frames whose middle one contains uranium, which GFN2-xTB has no parameters for."""
    frames = [with_reference_labels(molecule("H2O"), 0), ase.Atoms("U"), with_reference_labels(molecule("CH4"), 1)]
    frames[1].calc = SinglePointCalculator(frames[1], energy=0.0, forces=np.zeros((1, 3)))
    path = tmp_path / "input.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_failure_aborts(tmp_path):
    output = tmp_path / "labelled.xyz"
    result = run_script(failing_input(tmp_path), output)

    assert result.returncode == 1
    assert "frame 1" in result.stderr
    assert "--on-failure skip" in result.stderr
    assert not output.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.xyz"]


def test_failure_skipped(tmp_path):
    output = tmp_path / "labelled.xyz"
    result = run_script(failing_input(tmp_path), output, "--on-failure", "skip")

    assert result.returncode == 0, result.stderr
    assert "frame 1" in result.stderr
    labelled = ase.io.read(output, index=":")
    assert [atoms.get_chemical_formula() for atoms in labelled] == ["H2O", "CH4"]


def test_unconverged_scf_aborts(structures, tmp_path):
    path, _ = structures
    output = tmp_path / "labelled.xyz"
    result = run_script(path, output, "--max-iterations", "2")

    assert result.returncode == 1
    assert "SCF not converged" in result.stderr
    assert not output.exists()


def test_existing_label_rejected(tmp_path):
    atoms = molecule("H2O")
    atoms.info["dipole"] = np.array([0.1, 0.2, 0.3])
    path = tmp_path / "input.xyz"
    ase.io.write(path, atoms, format="extxyz")
    result = run_script(path, tmp_path / "labelled.xyz")

    assert result.returncode == 1
    assert "--dipole-key" in result.stderr


def test_existing_output_kept(structures, tmp_path):
    path, _ = structures
    output = tmp_path / "labelled.xyz"
    output.write_text("keep me\n")
    result = run_script(path, output)

    assert result.returncode == 1
    assert "--overwrite" in result.stderr
    assert output.read_text() == "keep me\n"


def test_missing_input(tmp_path):
    result = run_script(tmp_path / "absent.xyz", tmp_path / "labelled.xyz")

    assert result.returncode == 1
    assert "not found" in result.stderr
