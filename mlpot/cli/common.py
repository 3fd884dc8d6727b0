"""Options shared by the subcommands that read structure files with a trained model."""

from __future__ import annotations

import argparse
import dataclasses

from mlpot import keys
from mlpot.data.labels import LabelSpec, find_label


def add_label_options(parser: argparse.ArgumentParser) -> None:
    """Add --energy-key, --energy-unit and the other LabelSpec fields as flags."""
    group = parser.add_argument_group("label names and units in DATA (defaults suit extxyz written by ASE)")
    for item in dataclasses.fields(LabelSpec):
        group.add_argument("--" + item.name.replace("_", "-"), dest=f"label_{item.name}", metavar="VALUE", default=None)


def label_spec_from_args(args: argparse.Namespace) -> LabelSpec:
    """Build a LabelSpec from the flags of :func:`add_label_options`."""
    spec = LabelSpec()
    for item in dataclasses.fields(LabelSpec):
        value = getattr(args, f"label_{item.name}")
        if value is not None:
            setattr(spec, item.name, value)
    spec.check_units()
    return spec


def positive_int(text: str) -> int:
    """Parse a command-line value that must be a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """Add --device and --batch-size."""
    parser.add_argument("--device", default="cpu", help="torch device to evaluate on: cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="structures per batch (default 32)")


def labels_in_first_frame(path: str, spec: LabelSpec) -> tuple[str, ...]:
    """Return which of energy, forces, stress and dipole the first structure of ``path`` carries."""
    from pathlib import Path

    import ase.io
    import numpy as np

    if Path(path).suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
        return tuple(label for label, array in ((keys.ENERGY, "energies"), (keys.FORCES, "forces")) if array in names)
    from mlpot.data.io import read_structures

    try:
        atoms = ase.io.read(path, index=0)
    except Exception:  # The full read below reports the error with the file name.
        read_structures(path, (), spec)
        raise
    return tuple(label for label in keys.LABELS if find_label(atoms, spec.key_of(label)) is not None)
