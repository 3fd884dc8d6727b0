"""Reading structure files into :class:`~mlpot.data.labels.Structure` objects.

Any format that ``ase.io.read`` understands works (extxyz first). ASE databases (.db, .json) are
read row by row, with each row's key-value pairs and data available as labels. rMD17-style npz
archives are read by :mod:`mlpot.data.npz`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ase
import ase.db
import ase.io
from ase.io.formats import string2index

from mlpot import keys
from mlpot.data.labels import LABEL_QUANTITIES, LabelSpec, Structure, extract_labels
from mlpot.data.npz import read_npz_frames
from mlpot.data.validation import validate_structure
from mlpot.errors import DataError
from mlpot.units import factor_to_internal

logger = logging.getLogger(__name__)

#: Units of files that ASE reads, unless the LabelSpec declares others. ASE keeps the numbers of
#: an extxyz file as written; these are the units that ASE's own writers use.
ASE_UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3", "dipole": "e·Å"}

#: Suffixes of ASE database files, read with :func:`ase.db.connect`.
DATABASE_SUFFIXES = (".db", ".json")


def read_structures(
    path: str | Path,
    labels: tuple[str, ...] = (keys.ENERGY, keys.FORCES),
    spec: LabelSpec | None = None,
    elements: list[int] | None = None,
    index: str | int | slice = ":",
) -> list[Structure]:
    """Read every frame of ``path`` with its ``labels`` in mlpot's units, and validate it.

    Args:
        path: a file ASE reads (format from the extension; extxyz for .xyz), an ASE database
            (.db or .json) or an .npz archive.
        labels: labels every frame must have, from :data:`mlpot.keys.LABELS`.
        spec: names and units of the labels in the file; the defaults suit extxyz from ASE.
        elements: atomic numbers the model was trained on; a frame with another element raises
            :class:`~mlpot.errors.ElementError`. ``None`` accepts every element.
        index: frames to read, in ``ase.io.read`` syntax (``":"``, ``"10:20"``, ``-1``).
            Error messages and :attr:`Structure.index` give the frame's position in the file.

    Raises:
        DataError: the file is missing, unreadable or truncated; a label is missing or invalid;
            positions are not finite; two atoms are closer than 0.1 Å. The message names the file
            and the frame.
    """
    spec = spec or LabelSpec()
    path = Path(path)
    labels = tuple(labels)
    for label in labels:
        if label not in LABEL_QUANTITIES:
            raise DataError(f"unknown label {label!r}; expected one of {sorted(LABEL_QUANTITIES)}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the path of a structure file")
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path (relative paths start at {Path.cwd()})")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied; make the file readable (chmod u+r) or copy it")
    selection = _parse_index(index)

    if path.suffix == ".npz":
        frames, default_units = read_npz_frames(path, labels, spec, selection), {}
    else:
        if path.suffix in DATABASE_SUFFIXES:
            frames = _read_database(path, selection)
        else:
            frames = _read_with_ase(path, selection)
        default_units = ASE_UNITS
        _scale_lengths(frames, spec)
    if not frames:
        raise DataError(f"{path}: the file contains no structures (frames {index!r})")

    structures = []
    for frame_number, atoms in frames:
        where = f"{path}, frame {frame_number}"
        structure = Structure(
            atoms=atoms,
            labels=extract_labels(atoms, labels, spec, where, default_units),
            source=str(path),
            index=frame_number,
        )
        validate_structure(structure, elements)
        structures.append(structure)
    logger.info("read %d structures from %s", len(structures), path)
    return structures


def _parse_index(index: str | int | slice) -> int | slice:
    if isinstance(index, (int, slice)):
        return index
    try:
        return string2index(index)
    except ValueError as error:
        raise DataError(
            f"invalid frame selection {index!r}; use an integer or a slice such as ':' or '10:20'"
        ) from error


def _select(path: Path, frames: list[ase.Atoms], selection: int | slice) -> list[tuple[int, ase.Atoms]]:
    """Pick frames by ``selection`` and pair each with its position in the file."""
    try:
        numbers = range(len(frames))[selection]
    except IndexError as error:
        raise DataError(f"{path}: frame {selection} does not exist; the file has {len(frames)} frames") from error
    if isinstance(numbers, int):
        numbers = [numbers]
    return [(number, frames[number]) for number in numbers]


def _read_with_ase(path: Path, selection: int | slice) -> list[tuple[int, ase.Atoms]]:
    # A selection counted from the start lets ASE read only those frames. A selection counted
    # from the end needs the number of frames, so the whole file is read first.
    if isinstance(selection, int):
        from_start = selection >= 0
    else:
        from_start = all(bound is None or bound >= 0 for bound in (selection.start, selection.stop))
        from_start = from_start and (selection.step or 1) > 0
    try:
        frames = ase.io.read(str(path), index=selection if from_start else ":")
    except Exception as error:  # ASE raises many exception types for malformed files.
        reason = f"{type(error).__name__}: {error}"
        frame = _first_unreadable_frame(path)
        if frame:  # frame 0 failing says nothing beyond the error itself; the format may be wrong
            raise DataError(
                f"{path}: could not be read by ASE, frame {frame} is truncated or malformed ({reason}). "
                "Repair or remove that frame; a file cut short by an interrupted write or copy loses its last frames"
            ) from error
        raise DataError(
            f"{path}: could not be read by ASE ({reason}). The file may be truncated "
            "or malformed, or its extension may not name its format"
        ) from error
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    frames = list(frames)

    if not from_start:
        return _select(path, frames, selection)
    if isinstance(selection, int):
        return [(selection, frames[0])]
    start, step = selection.start or 0, selection.step or 1
    return [(start + k * step, atoms) for k, atoms in enumerate(frames)]


def _first_unreadable_frame(path: Path) -> int | None:
    """Return the index of the first frame that ASE fails to read, or None if it reads them all."""
    count = 0
    try:
        for _ in ase.io.iread(str(path), index=":"):
            count += 1
    except Exception:  # the same errors as the full read; only where it happens matters here
        return count
    return None


def _read_database(path: Path, selection: int | slice) -> list[tuple[int, ase.Atoms]]:
    """Read an ASE database, with each row's key-value pairs and data merged into ``atoms.info``.

    ``ase.io.read`` drops both, and they are where custom labels such as ``ref_energy`` live.
    """
    try:
        with ase.db.connect(str(path)) as database:
            rows = list(database.select())
    except Exception as error:  # sqlite3 and json raise several types for broken files.
        raise DataError(f"{path}: not a readable ASE database ({type(error).__name__}: {error})") from error

    frames = []
    for row in rows:
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        atoms.info.update(row.get("data", {}))
        frames.append(atoms)
    return _select(path, frames, selection)


def _scale_lengths(frames: list[tuple[int, ase.Atoms]], spec: LabelSpec) -> None:
    length_factor = factor_to_internal(spec.length_unit or "Å", "length")
    if length_factor == 1.0:
        return
    for _, atoms in frames:
        atoms.positions *= length_factor
        atoms.cell *= length_factor
