"""Reading structure files into :class:`~mlpot.data.labels.Structure` objects.

Any format that ``ase.io.read`` understands works (extxyz first, ASE databases too), and so do
rMD17-style npz files with the arrays ``nuclear_charges`` (n_atoms,), ``coords``
(frames, n_atoms, 3), ``energies`` (frames,) and ``forces`` (frames, n_atoms, 3).
"""

from __future__ import annotations

import logging
from pathlib import Path

import ase
import ase.io
import numpy as np

from mlpot import keys
from mlpot.data.labels import LabelSpec, Structure, extract_labels
from mlpot.data.validation import validate_structure
from mlpot.errors import DataError
from mlpot.units import factor_to_internal

logger = logging.getLogger(__name__)

#: Units of files that ASE reads: ASE converts to eV and Å itself.
ASE_UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3", "dipole": "e·Å"}

# Names of the arrays in rMD17-style npz files, for each label.
_NPZ_ARRAYS = {keys.ENERGY: "energies", keys.FORCES: "forces", keys.DIPOLE: "dipoles"}


def read_structures(
    path: str | Path,
    labels: tuple[str, ...] = (keys.ENERGY, keys.FORCES),
    spec: LabelSpec | None = None,
    elements: list[int] | None = None,
    index: str | int | slice = ":",
) -> list[Structure]:
    """Read every frame of ``path`` with its ``labels`` in mlpot's units, and validate it.

    Args:
        path: a file ASE reads (format from the extension; extxyz for .xyz) or an .npz file.
        labels: labels every frame must have, from :data:`mlpot.keys.LABELS`.
        spec: names and units of the labels in the file; the defaults suit extxyz from ASE.
        elements: atomic numbers a model knows; a frame with another element raises
            :class:`~mlpot.errors.ElementError`. ``None`` accepts every element.
        index: frames to read, in ``ase.io.read`` syntax.

    Raises:
        DataError: the file is missing, unreadable or truncated; a label is missing or invalid;
            positions are not finite; two atoms are closer than 0.1 Å. The message names the file
            and the frame.
    """
    spec = spec or LabelSpec()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")

    if path.suffix == ".npz":
        frames, default_units = _read_npz(path, labels, spec), {}
    else:
        frames, default_units = _read_with_ase(path, index), ASE_UNITS
    if not frames:
        raise DataError(f"{path}: the file contains no structures")

    structures = []
    for frame_index, atoms in enumerate(frames):
        where = f"{path}, frame {frame_index}"
        if path.suffix != ".npz":
            length_factor = factor_to_internal(spec.length_unit or "Å", "length")
            if length_factor != 1.0:
                atoms.positions *= length_factor
                atoms.cell *= length_factor
        structure = Structure(
            atoms=atoms,
            labels=extract_labels(atoms, tuple(labels), spec, where, default_units),
            source=str(path),
            index=frame_index,
        )
        validate_structure(structure, elements)
        structures.append(structure)
    logger.info("read %d structures from %s", len(structures), path)
    return structures


def _read_with_ase(path: Path, index) -> list[ase.Atoms]:
    try:
        frames = ase.io.read(str(path), index=index)
    except Exception as error:  # ASE raises many exception types for malformed files.
        raise DataError(
            f"{path}: could not be read by ASE ({type(error).__name__}: {error}). "
            "Check that the file is complete and that its extension names its format"
        ) from error
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    return list(frames)


def _read_npz(path: Path, labels: tuple[str, ...], spec: LabelSpec) -> list[ase.Atoms]:
    """Turn an rMD17-style npz into frames whose labels sit in ``atoms.info`` and ``atoms.arrays``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # zipfile and numpy raise several types for broken archives.
        raise DataError(f"{path}: not a readable npz archive ({type(error).__name__}: {error})") from error

    for required in ("nuclear_charges", "coords"):
        if required not in arrays:
            raise DataError(f"{path}: npz array {required!r} is missing; the file has {sorted(arrays)}")
    numbers = np.asarray(arrays["nuclear_charges"], dtype=np.int64)
    coords = np.asarray(arrays["coords"], dtype=np.float64)
    if coords.ndim != 3 or coords.shape[1:] != (len(numbers), 3):
        raise DataError(f"{path}: 'coords' has shape {coords.shape}; expected (frames, {len(numbers)}, 3)")
    length_factor = factor_to_internal(spec.length_unit or "Å", "length")

    frames = []
    for frame, positions in enumerate(coords):
        atoms = ase.Atoms(numbers=numbers, positions=positions * length_factor)
        for label in labels:
            array_name = _NPZ_ARRAYS.get(label)
            if array_name is None or array_name not in arrays:
                continue  # extract_labels reports the missing label with the frame.
            value = arrays[array_name][frame]
            if label == keys.FORCES:
                atoms.arrays[spec.key_of(label)] = np.asarray(value, dtype=np.float64)
            else:
                atoms.info[spec.key_of(label)] = value
        frames.append(atoms)
    return frames
