"""Reading rMD17-style npz archives into ``ase.Atoms`` frames with their labels attached.

An archive contains ``nuclear_charges`` (n_atoms,), ``coords`` (frames, n_atoms, 3) and, per label,
``energies`` (frames,), ``forces`` (frames, n_atoms, 3) or ``dipoles`` (frames, 3). An array named
after the label's key in :class:`~mlpot.data.labels.LabelSpec` takes precedence over these names.
npz files carry no units: every requested label needs a declared unit, and positions are taken
as Å unless ``length_unit`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np

from mlpot import keys
from mlpot.data.labels import LABEL_QUANTITIES, LabelSpec
from mlpot.errors import DataError
from mlpot.units import factor_to_internal

#: Array name of each label in rMD17 archives.
RMD17_ARRAYS = {keys.ENERGY: "energies", keys.FORCES: "forces", keys.DIPOLE: "dipoles"}


def read_npz_frames(
    path: Path, labels: tuple[str, ...], spec: LabelSpec, selection: int | slice
) -> list[tuple[int, ase.Atoms]]:
    """Return ``(frame number, atoms)`` for the frames of ``path`` picked by ``selection``.

    Labels sit in ``atoms.info`` (per structure) or ``atoms.arrays`` (per atom) under their
    ``spec`` key, still in the file's units; :func:`~mlpot.data.labels.extract_labels` converts them.

    Raises:
        DataError: the archive is unreadable, an array is missing or has the wrong shape, a
            requested label has no declared unit, or ``selection`` is out of range.
    """
    _require_units(path, labels, spec)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # zipfile, numpy and pickle refusal raise several types.
        raise DataError(f"{path}: not a readable npz archive ({type(error).__name__}: {error})") from error

    for required in ("nuclear_charges", "coords"):
        if required not in arrays:
            raise DataError(f"{path}: npz array {required!r} is missing; the file has {sorted(arrays)}")
    numbers = np.asarray(arrays["nuclear_charges"]).astype(np.int64)
    coords = np.asarray(arrays["coords"], dtype=np.float64)
    if numbers.ndim != 1:
        raise DataError(f"{path}: 'nuclear_charges' has shape {numbers.shape}; expected (n_atoms,)")
    if coords.ndim != 3 or coords.shape[1:] != (len(numbers), 3):
        raise DataError(f"{path}: 'coords' has shape {coords.shape}; expected (frames, {len(numbers)}, 3)")
    label_arrays = {label: _label_array(path, arrays, label, spec, len(coords)) for label in labels}

    try:
        frame_numbers = range(len(coords))[selection]
    except IndexError as error:
        raise DataError(f"{path}: frame {selection} does not exist; the file has {len(coords)} frames") from error
    if isinstance(frame_numbers, int):
        frame_numbers = [frame_numbers]

    length_factor = factor_to_internal(spec.length_unit or "Å", "length")
    frames = []
    for frame in frame_numbers:
        atoms = ase.Atoms(numbers=numbers, positions=coords[frame] * length_factor)
        for label, values in label_arrays.items():
            if label == keys.FORCES:
                atoms.arrays[spec.key_of(label)] = np.asarray(values[frame], dtype=np.float64)
            else:
                atoms.info[spec.key_of(label)] = values[frame]
        frames.append((frame, atoms))
    return frames


def _require_units(path: Path, labels: tuple[str, ...], spec: LabelSpec) -> None:
    for label in labels:
        quantity = LABEL_QUANTITIES[label]
        if spec.unit_of(quantity) is not None:
            continue
        setting = f"{quantity}_unit"
        if quantity in ("forces", "stress"):
            setting += f", or energy_unit, which {quantity} follows"
        raise DataError(
            f"{path}: npz files carry no units, and the unit of {label} is not declared. Set {setting}. "
            "rMD17 gives energies in kcal/mol and forces in kcal/mol/Å"
        )


def _label_array(path: Path, arrays: dict[str, np.ndarray], label: str, spec: LabelSpec, n_frames: int) -> np.ndarray:
    names = [spec.key_of(label)]
    if label in RMD17_ARRAYS:
        names.append(RMD17_ARRAYS[label])
    for name in names:
        if name in arrays:
            values = np.asarray(arrays[name])
            if values.ndim == 0 or len(values) != n_frames:
                raise DataError(
                    f"{path}: npz array {name!r} ({label}) has shape {values.shape}; expected {n_frames} "
                    "frames along its first axis, as in 'coords'"
                )
            return values
    raise DataError(
        f"{path}: no npz array for {label}; looked for {' and '.join(repr(name) for name in names)}, "
        f"the file has {sorted(arrays)}. Set {label}_key to the array's name, or leave {label} out of the labels"
    )
