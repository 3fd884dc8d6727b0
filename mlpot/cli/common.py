"""Options shared by the subcommands that read structure files with a trained model."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mlpot import keys
from mlpot.data.labels import LabelSpec, find_label


#: Characters that mlpot's messages and tables print: units, Greek letters and the dot of e·Å.
OUTPUT_CHARACTERS = "Åμσ·³"


def make_output_safe() -> None:
    """Make sys.stdout and sys.stderr replace the characters their encoding lacks.

    An ASCII or cp1252 console (``PYTHONIOENCODING=ascii``, some Windows terminals) cannot
    encode units such as Å or μ, and printing them would raise UnicodeEncodeError. The streams
    are reconfigured with ``errors="replace"``, so such characters print as ``?``. Streams that
    can encode them, or that cannot be reconfigured, are left as they are.
    """
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            OUTPUT_CHARACTERS.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors="replace")


def plural(count: int, noun: str) -> str:
    """Return ``"1 structure"`` or ``"2 structures"``: the count with the noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


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


@dataclasses.dataclass
class FirstFrameLabels:
    """Labels found in, and missing from, the first structure of a file.

    Attributes:
        found: labels present under their LabelSpec key (or, in npz archives, the rMD17 name).
        missing: the other labels of :data:`mlpot.keys.LABELS`.
        names: entries of the first frame (info, arrays and calculator results), or the array
            names of an npz archive, sorted.
    """

    found: tuple[str, ...]
    missing: tuple[str, ...]
    names: list[str]


def labels_in_first_frame(path: str, spec: LabelSpec) -> FirstFrameLabels:
    """Look up each of :data:`mlpot.keys.LABELS` in the first structure of ``path``."""
    from pathlib import Path

    import ase.io
    import numpy as np

    if Path(path).suffix == ".npz":
        from mlpot.data.npz import RMD17_ARRAYS

        with np.load(path, allow_pickle=False) as archive:
            names = sorted(archive.files)
        found = tuple(
            label for label in keys.LABELS if spec.key_of(label) in names or RMD17_ARRAYS.get(label) in names
        )
    else:
        from mlpot.data.io import read_structures

        try:
            atoms = ase.io.read(path, index=0)
        except Exception:  # The full read below reports the error with the file name.
            read_structures(path, (), spec)
            raise
        results = getattr(atoms.calc, "results", None) if atoms.calc is not None else None
        entries = set(atoms.info) | (set(atoms.arrays) - {"numbers", "positions"}) | set(results or ())
        names = sorted(entries)
        found = tuple(label for label in keys.LABELS if find_label(atoms, spec.key_of(label)) is not None)
    missing = tuple(label for label in keys.LABELS if label not in found)
    return FirstFrameLabels(found=found, missing=missing, names=names)
