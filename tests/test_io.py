"""Reading extxyz, ASE databases and rMD17 npz files into labelled structures."""

from __future__ import annotations

import ase
import ase.db
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot import keys
from mlpot.data.io import read_structures
from mlpot.data.labels import LabelSpec, Structure
from mlpot.data.validation import validate_structure
from mlpot.errors import DataError, ElementError
from mlpot.units import factor_to_internal

KCAL_PER_MOL_EV = 0.0433641
BOHR_ANGSTROM = 0.52917721067
ALL_LABELS = (keys.ENERGY, keys.FORCES, keys.STRESS, keys.DIPOLE)
# extxyz stores per-atom values with 8 decimals, so labels read back differ by up to 5e-9.
XYZ_ATOL = 1e-8


def random_frames(count: int = 4, seed: int = 0, periodic: bool = False) -> list[ase.Atoms]:
    """Return water-like frames with random energy, forces, stress and dipole in ``atoms.info``/``arrays``."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    frames = []
    for _ in range(count):
        atoms = ase.Atoms("OH2", positions=base + rng.normal(scale=0.05, size=(3, 3)) + 1.0)
        if periodic:
            atoms.cell = np.diag(rng.uniform(5.0, 7.0, size=3))
            atoms.pbc = True
        stress = rng.normal(size=(3, 3))
        atoms.info["energy"] = float(rng.normal(-10.0, 1.0))
        atoms.info["stress"] = stress + stress.T
        atoms.info["dipole"] = rng.normal(size=3)
        atoms.arrays["forces"] = rng.normal(size=(3, 3))
        frames.append(atoms)
    return frames


def write_xyz(path, frames, rename: dict[str, str] | None = None):
    """Write ``frames`` as extxyz, storing each label under ``rename[label]`` if given."""
    rename = rename or {}
    copies = []
    for atoms in frames:
        copy = ase.Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        for name in ("energy", "stress", "dipole"):
            copy.info[rename.get(name, name)] = atoms.info[name]
        copy.arrays[rename.get("forces", "forces")] = atoms.arrays["forces"]
        copies.append(copy)
    ase.io.write(path, copies, format="extxyz")
    return path


def assert_labels_match(structures, frames):
    assert len(structures) == len(frames)
    for structure, atoms in zip(structures, frames):
        assert structure.labels[keys.ENERGY] == pytest.approx(atoms.info["energy"], rel=1e-12)
        np.testing.assert_allclose(structure.labels[keys.FORCES], atoms.arrays["forces"], rtol=0, atol=XYZ_ATOL)
        np.testing.assert_allclose(structure.labels[keys.STRESS], atoms.info["stress"], rtol=1e-12)
        np.testing.assert_allclose(structure.labels[keys.DIPOLE], atoms.info["dipole"], rtol=1e-12)


# Bundled data


def test_bundled_ethanol_xyz(data_dir):
    path = data_dir / "ethanol" / "train.xyz"
    structures = read_structures(path)
    reference = ase.io.read(path, index=":")
    assert len(structures) == len(reference)
    assert structures[5].labels[keys.ENERGY] == reference[5].get_potential_energy()
    np.testing.assert_array_equal(structures[5].labels[keys.FORCES], reference[5].get_forces())


@pytest.mark.parametrize(
    "name", ["acetylacetone/train_300K.xyz", "acetylacetone/isolated_atoms.xyz", "ethanol/isolated_atoms.xyz"]
)
def test_bundled_xyz_files_load(data_dir, name):
    labels = (keys.ENERGY,) if "isolated" in name else (keys.ENERGY, keys.FORCES)
    structures = read_structures(data_dir / name, labels=labels, index=":5")
    assert all(np.isfinite(s.labels[keys.ENERGY]) for s in structures)


def test_bundled_rmd17_npz(data_dir):
    path = data_dir / "rmd17" / "rmd17_ethanol_train_01.npz"
    structures = read_structures(path, spec=LabelSpec(energy_unit="kcal/mol"))
    with np.load(path) as archive:
        energies, forces, coords = archive["energies"], archive["forces"], archive["coords"]
    assert len(structures) == len(energies)
    assert structures[7].labels[keys.ENERGY] == pytest.approx(energies[7] * KCAL_PER_MOL_EV, rel=1e-6)
    np.testing.assert_allclose(structures[7].labels[keys.FORCES], forces[7] * KCAL_PER_MOL_EV, rtol=1e-6)
    np.testing.assert_array_equal(structures[7].atoms.positions, coords[7])


def test_bundled_rmd17_aspirin_numbers(data_dir):
    path = data_dir / "rmd17" / "rmd17_aspirin_test_01.npz"
    structures = read_structures(path, spec=LabelSpec(energy_unit="kcal/mol"), index="-2:")
    with np.load(path) as archive:
        numbers, n_frames = archive["nuclear_charges"], len(archive["energies"])
    assert [s.index for s in structures] == [n_frames - 2, n_frames - 1]
    np.testing.assert_array_equal(structures[0].atoms.numbers, numbers)


def test_npz_without_units_raises(data_dir):
    path = data_dir / "rmd17" / "rmd17_ethanol_test_01.npz"
    with pytest.raises(DataError, match="npz files carry no units.*energy_unit"):
        read_structures(path)


def test_npz_forces_unit_alone_raises(data_dir):
    path = data_dir / "rmd17" / "rmd17_ethanol_test_01.npz"
    with pytest.raises(DataError, match="unit of energy is not declared"):
        read_structures(path, spec=LabelSpec(forces_unit="kcal/mol/Å"))


# Where labels are found


def test_labels_from_calculator(tmp_path):
    frames = random_frames()
    path = write_xyz(tmp_path / "plain.xyz", frames)
    assert ase.io.read(path).calc is not None, "ASE is expected to move plain labels into a calculator"
    assert_labels_match(read_structures(path, labels=ALL_LABELS), frames)


def test_labels_from_info_and_arrays(tmp_path):
    frames = random_frames()
    rename = {name: f"REF_{name}" for name in ("energy", "forces", "stress", "dipole")}
    path = write_xyz(tmp_path / "ref.xyz", frames, rename)
    first = ase.io.read(path)
    assert "REF_energy" in first.info
    assert "REF_forces" in first.arrays
    spec = LabelSpec(energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress", dipole_key="REF_dipole")
    assert_labels_match(read_structures(path, labels=ALL_LABELS, spec=spec), frames)


def test_database_calculator_and_key_values(tmp_path):
    frames = random_frames(3)
    path = tmp_path / "frames.db"
    with ase.db.connect(path) as database:
        for atoms in frames:
            stored = ase.Atoms(atoms.numbers, positions=atoms.positions)
            stored.calc = SinglePointCalculator(stored, energy=atoms.info["energy"], forces=atoms.arrays["forces"])
            database.write(stored, ref_energy=atoms.info["energy"] + 1.0, data={"ref_forces": -atoms.arrays["forces"]})

    plain = read_structures(path)
    custom = read_structures(path, spec=LabelSpec(energy_key="ref_energy", forces_key="ref_forces"))
    for structure, atoms in zip(plain, frames):
        assert structure.labels[keys.ENERGY] == atoms.info["energy"]
        np.testing.assert_array_equal(structure.labels[keys.FORCES], atoms.arrays["forces"])
    for structure, atoms in zip(custom, frames):
        assert structure.labels[keys.ENERGY] == atoms.info["energy"] + 1.0
        np.testing.assert_array_equal(structure.labels[keys.FORCES], -atoms.arrays["forces"])


def test_stress_voigt_and_full_agree(tmp_path):
    frames = random_frames(2, periodic=True)
    path = write_xyz(tmp_path / "full.xyz", frames, {"stress": "full_stress"})
    voigt_frames = []
    for atoms in frames:
        copy = atoms.copy()
        copy.info["stress"] = atoms.info["stress"][[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        voigt_frames.append(copy)
    voigt_path = write_xyz(tmp_path / "voigt.xyz", voigt_frames, {"stress": "voigt_stress"})
    full = read_structures(path, labels=(keys.STRESS,), spec=LabelSpec(stress_key="full_stress"))
    voigt = read_structures(voigt_path, labels=(keys.STRESS,), spec=LabelSpec(stress_key="voigt_stress"))
    for a, b, atoms in zip(full, voigt, frames):
        np.testing.assert_allclose(a.labels[keys.STRESS], atoms.info["stress"], rtol=1e-12)
        np.testing.assert_allclose(b.labels[keys.STRESS], atoms.info["stress"], rtol=1e-12)


# Units


def test_xyz_units_converted(tmp_path):
    frames = random_frames(2, periodic=True)
    path = write_xyz(tmp_path / "atomic_units.xyz", frames)
    spec = LabelSpec(energy_unit="Hartree", length_unit="Bohr", stress_unit="kbar", dipole_unit="Debye")
    structures = read_structures(path, labels=ALL_LABELS, spec=spec)
    hartree = factor_to_internal("Hartree", "energy")
    for structure, atoms in zip(structures, frames):
        np.testing.assert_allclose(structure.atoms.positions, atoms.positions * BOHR_ANGSTROM, rtol=0, atol=XYZ_ATOL)
        np.testing.assert_allclose(structure.atoms.cell.array, atoms.cell.array * BOHR_ANGSTROM, rtol=1e-9)
        assert structure.labels[keys.ENERGY] == pytest.approx(atoms.info["energy"] * hartree, rel=1e-12)
        expected_forces = atoms.arrays["forces"] * hartree / BOHR_ANGSTROM
        forces_atol = XYZ_ATOL * hartree / BOHR_ANGSTROM
        np.testing.assert_allclose(structure.labels[keys.FORCES], expected_forces, rtol=0, atol=forces_atol)
        np.testing.assert_allclose(structure.labels[keys.STRESS], atoms.info["stress"] * 0.1 / 160.21766, rtol=1e-6)
        np.testing.assert_allclose(structure.labels[keys.DIPOLE], atoms.info["dipole"] * 0.2081943, rtol=1e-6)


def test_npz_length_unit(tmp_path):
    rng = np.random.default_rng(3)
    coords = rng.uniform(0.0, 4.0, size=(2, 3, 3))
    path = tmp_path / "bohr.npz"
    energies, forces = rng.normal(size=2), rng.normal(size=(2, 3, 3))
    np.savez(path, nuclear_charges=np.array([8, 1, 1]), coords=coords, energies=energies, forces=forces)
    spec = LabelSpec(energy_unit="Hartree", length_unit="Bohr")
    structures = read_structures(path, spec=spec)
    np.testing.assert_allclose(structures[1].atoms.positions, coords[1] * BOHR_ANGSTROM, rtol=1e-9)


# Errors


def test_missing_file_raises(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_structures(tmp_path / "absent.xyz")


def test_missing_label_names_file_frame_key(tmp_path):
    frames = random_frames(4)
    path = tmp_path / "gap.xyz"
    write_xyz(path, frames, {"energy": "REF_energy"})
    text = path.read_text().splitlines(keepends=True)
    # Frame 2 starts after two frames of 5 lines (count, comment, 3 atoms).
    text[11] = text[11].replace("REF_energy=", "other_energy=")
    path.write_text("".join(text))
    with pytest.raises(DataError, match=r"gap\.xyz, frame 2: label 'REF_energy' \(energy\) is missing"):
        read_structures(path, spec=LabelSpec(energy_key="REF_energy"))


def test_frame_number_counts_from_file_start(tmp_path):
    path = write_xyz(tmp_path / "slice.xyz", random_frames(6), {"dipole": "mu"})
    lines = path.read_text().splitlines(keepends=True)
    lines[4 * 5 + 1] = lines[4 * 5 + 1].replace("mu=", "nu=")  # comment line of frame 4
    path.write_text("".join(lines))
    spec = LabelSpec(dipole_key="mu")
    with pytest.raises(DataError, match=r"slice\.xyz, frame 4: label 'mu'"):
        read_structures(path, labels=(keys.DIPOLE,), spec=spec, index="3:")
    structures = read_structures(path, labels=(keys.DIPOLE,), spec=spec, index="1:4:2")
    assert [s.index for s in structures] == [1, 3]


def test_npz_missing_array_raises(tmp_path):
    path = tmp_path / "no_forces.npz"
    coords = np.zeros((2, 2, 3)) + [[0, 0, 0], [0, 0, 0.7]]
    np.savez(path, nuclear_charges=np.array([1, 1]), coords=coords, energies=np.zeros(2))
    with pytest.raises(DataError, match="no npz array for forces"):
        read_structures(path, spec=LabelSpec(energy_unit="eV"))


def test_npz_frame_count_mismatch_raises(tmp_path):
    path = tmp_path / "short.npz"
    coords = np.zeros((3, 2, 3)) + [[0, 0, 0], [0, 0, 0.7]]
    np.savez(path, nuclear_charges=np.array([1, 1]), coords=coords, energies=np.zeros(2), forces=np.zeros((3, 2, 3)))
    with pytest.raises(DataError, match="'energies'.*expected 3 frames"):
        read_structures(path, spec=LabelSpec(energy_unit="eV"))


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_label_in_file_raises(tmp_path, bad):
    path = write_xyz(tmp_path / "bad_label.xyz", random_frames(3))
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[8].split()  # second atom of frame 1
    fields[-1] = bad
    lines[8] = " ".join(fields) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"bad_label\.xyz, frame 1: label 'forces' contains NaN or infinite"):
        read_structures(path)


def test_non_finite_position_raises(tmp_path):
    path = write_xyz(tmp_path / "bad_position.xyz", random_frames(3))
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[14].split()  # third atom of frame 2
    fields[2] = "nan"
    lines[14] = " ".join(fields) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"bad_position\.xyz, frame 2: position of atom 2 \(H\) is NaN"):
        read_structures(path)


def test_close_atoms_raise(tmp_path):
    frames = random_frames(3)
    frames[1].positions[2] = frames[1].positions[0] + [0.05, 0.0, 0.0]
    path = write_xyz(tmp_path / "close.xyz", frames)
    with pytest.raises(DataError, match=r"close\.xyz, frame 1: atoms 0 \(O\) and 2 \(H\) are 0\.05 Å apart"):
        read_structures(path)


def test_close_periodic_image_raises(tmp_path):
    frames = random_frames(2, periodic=True)
    atoms = frames[1]
    atoms.positions[1] = [0.02, 2.0, 2.0]
    atoms.positions[2] = [atoms.cell[0, 0] - 0.03, 2.0, 2.0]
    path = write_xyz(tmp_path / "image.xyz", frames)
    with pytest.raises(DataError, match=r"image\.xyz, frame 1: atoms 1 \(H\) and 2 \(H\) .* periodic image"):
        read_structures(path)


def test_close_image_ignored_without_pbc(tmp_path):
    frames = random_frames(2, periodic=True)
    atoms = frames[1]
    atoms.positions[1] = [0.02, 2.0, 2.0]
    atoms.positions[2] = [atoms.cell[0, 0] - 0.03, 2.0, 2.0]
    for frame in frames:
        frame.pbc = False
    structures = read_structures(write_xyz(tmp_path / "open.xyz", frames))
    assert len(structures) == 2


def test_unknown_element_raises(tmp_path):
    path = write_xyz(tmp_path / "water.xyz", random_frames(2))
    message = r"water\.xyz, frame 0: element O is not in the model's element list \(H, C\)"
    with pytest.raises(ElementError, match=message):
        read_structures(path, elements=[1, 6])


def test_truncated_bundled_xyz_raises(data_dir, tmp_path):
    lines = (data_dir / "ethanol" / "train.xyz").read_text().splitlines(keepends=True)
    frame_length = int(lines[0]) + 2
    # Keep three whole frames and the first five lines of the fourth (count, comment, 3 atoms).
    path = tmp_path / "cut.xyz"
    path.write_text("".join(lines[: 3 * frame_length + 5]))
    with pytest.raises(DataError, match=r"cut\.xyz: could not be read"):
        read_structures(path)


def test_truncated_mid_line_raises(data_dir, tmp_path):
    text = (data_dir / "ethanol" / "train.xyz").read_text()
    lines = text.splitlines(keepends=True)
    frame_length = int(lines[0]) + 2
    cut = len("".join(lines[: 2 * frame_length + 4])) + 20  # inside the third atom line of frame 2
    path = tmp_path / "cut_line.xyz"
    path.write_text(text[:cut])
    with pytest.raises(DataError, match=r"cut_line\.xyz"):
        read_structures(path)


def test_unreadable_npz_raises(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"broken\.npz: not a readable npz"):
        read_structures(path, spec=LabelSpec(energy_unit="eV"))


def test_frame_out_of_range_raises(data_dir):
    path = data_dir / "rmd17" / "rmd17_ethanol_test_01.npz"
    with pytest.raises(DataError, match="frame 5000 does not exist"):
        read_structures(path, spec=LabelSpec(energy_unit="kcal/mol"), index=5000)


def test_validate_nan_cell_raises():
    atoms = random_frames(1, periodic=True)[0]
    atoms.cell[2, 2] = np.nan
    with pytest.raises(DataError, match=r"cell\.xyz, frame 6: the cell contains NaN"):
        validate_structure(Structure(atoms=atoms, source="cell.xyz", index=6))


def test_validate_degenerate_cell_raises():
    atoms = random_frames(1, periodic=True)[0]
    atoms.cell[2] = 2 * atoms.cell[0]
    with pytest.raises(DataError, match=r"cell\.xyz, frame 6: the periodic lattice vectors .* linearly dependent"):
        validate_structure(Structure(atoms=atoms, source="cell.xyz", index=6))


def test_validate_empty_structure_raises():
    with pytest.raises(DataError, match="no atoms"):
        validate_structure(Structure(atoms=ase.Atoms(), source="empty.xyz"))
