#!/usr/bin/env python
"""Label structures with GFN2-xTB dipoles, and optionally energies and forces, using tblite.

Reads every frame (or the ``--index`` selection) of any file that ASE reads, runs a single-point
xTB calculation on each through ``tblite.ase.TBLite`` and writes extended XYZ with

- ``atoms.info["dipole"]``: the dipole moment in e·Å about the origin of the coordinates,
- ``atoms.info["xtb_energy"]`` in eV with ``--energy``,
- ``atoms.arrays["xtb_forces"]`` in eV/Å with ``--forces``,
- ``atoms.arrays["xtb_charges"]``, the xTB Mulliken charges in e, with ``--charges``.

Every other entry of a frame is kept, including the energy and forces of its calculator (such as
DFT labels), so the xTB names must differ from them. Each key can be renamed by a flag, and a
name that already exists in a frame raises an error instead of overwriting a label.

Units of the dipole: the docstrings of tblite 0.8.0 give ``get_dipole_moment()`` in Debye, but
``TBLite.calculate`` stores the library's dipole, in e·Bohr, multiplied by ``ase.units.Bohr``, so
the value is in e·Å. Two numerical checks with tblite 0.8.0 agree. For an H2O anion (total charge
-1), translating the molecule by t changes the dipole by -t to within 2e-5 e·Å, as Q·t in e·Å
predicts; in Debye the change would be 4.8 times larger. For neutral H2O, the dipole is 0.476 and
Σ q_i r_i of the xTB Mulliken charges is 0.33 e·Å. Read as Debye, 0.476 would be 0.10 e·Å, less
than a third of the charge term alone. tests/test_label_script.py repeats the translation check
on a hydroxide ion.

The total charge of a frame is read from ``atoms.info["charge"]`` (0 when absent) and the spin
multiplicity from ``atoms.info["multiplicity"]`` (when absent, tblite uses the initial magnetic
moments). A frame on which xTB fails, for example because the SCF does not converge within
``--max-iterations``, stops the run (``--on-failure abort``, the default) or is left out of the
output with a warning (``--on-failure skip``). The output is written to a temporary file next to
it and renamed only when every frame is done, so a failed or interrupted run leaves no partial
file behind.

Example::

    OMP_NUM_THREADS=1 python scripts/label_xtb.py structures.xyz structures_xtb.xyz --energy --forces
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.calculators.calculator import CalculationFailed, InputError

from mlpot.data.labels import find_label
from mlpot.errors import DataError, MLPotError

logger = logging.getLogger("label_xtb")

METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Label structures with xTB dipoles (e·Å), and optionally energies (eV) and forces (eV/Å), "
        "using tblite. Writes extended XYZ.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="Structure file in any format ASE reads.")
    parser.add_argument("output", type=Path, help="Extended XYZ file to write.")
    parser.add_argument("--index", default=":", help="Frames to label, in ase.io.read syntax.")
    parser.add_argument("--input-format", default=None, help="ASE format of the input; empty means from the extension.")
    parser.add_argument("--method", default="GFN2-xTB", choices=METHODS, help="xTB Hamiltonian.")

    parser.add_argument("--energy", action="store_true", help="Also store the xTB energy in eV.")
    parser.add_argument("--forces", action="store_true", help="Also store the xTB forces in eV/Å.")
    parser.add_argument("--charges", action="store_true", help="Also store the xTB Mulliken charges in e.")
    parser.add_argument("--dipole-key", default="dipole", help="atoms.info key of the dipole.")
    parser.add_argument("--energy-key", default="xtb_energy", help="atoms.info key of the energy.")
    parser.add_argument("--forces-key", default="xtb_forces", help="atoms.arrays key of the forces.")
    parser.add_argument("--charges-key", default="xtb_charges", help="atoms.arrays key of the charges.")

    parser.add_argument("--charge-key", default="charge", help="atoms.info key of the total charge in e (0 if absent).")
    parser.add_argument("--multiplicity-key", default="multiplicity", help="atoms.info key of the spin multiplicity.")
    parser.add_argument("--max-iterations", type=int, default=250, help="Maximum SCF iterations.")
    parser.add_argument("--accuracy", type=float, default=1.0, help="tblite numerical accuracy; lower is tighter.")
    parser.add_argument("--electronic-temperature", type=float, default=300.0, help="Electronic temperature in K.")

    parser.add_argument(
        "--on-failure",
        choices=("abort", "skip"),
        default="abort",
        help="When xTB fails on a frame: stop without writing (abort) or leave the frame out (skip).",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace the output file if it exists.")
    parser.add_argument("--quiet", action="store_true", help="Log warnings and errors only, no progress.")
    return parser.parse_args(argv)


def output_keys(args: argparse.Namespace) -> dict[str, str]:
    """Map each requested xTB result (dipole, energy, forces, charges) to the key it is stored under."""
    requested = {"dipole": args.dipole_key}
    if args.energy:
        requested["energy"] = args.energy_key
    if args.forces:
        requested["forces"] = args.forces_key
    if args.charges:
        requested["charges"] = args.charges_key
    names = list(requested.values())
    if len(set(names)) != len(names):
        raise DataError(f"the output keys {requested} must differ from each other")
    return requested


def read_frames(path: Path, index: str, input_format: str | None) -> list[ase.Atoms]:
    """Read the selected frames of ``path``; raise DataError when the file is missing or unreadable."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frames = ase.io.read(path, index=index, format=input_format)
    except Exception as error:  # ASE raises many types for unreadable files
        raise DataError(f"{path}: cannot be read by ASE ({type(error).__name__}: {error})") from error
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise DataError(f"{path}: no frames selected by --index {index!r}")
    return frames


def make_calculator(args: argparse.Namespace, atoms: ase.Atoms, where: str):
    """Create a fresh tblite calculator for one frame, with its total charge and multiplicity."""
    try:
        from tblite.ase import TBLite
    except ModuleNotFoundError as error:
        raise MLPotError("tblite is not installed; install it with pip install 'mlpot[label]'") from error

    charge = atoms.info.get(args.charge_key, 0)
    multiplicity = atoms.info.get(args.multiplicity_key)
    try:
        charge = int(round(float(charge)))
        multiplicity = None if multiplicity is None else int(multiplicity)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"{where}: total charge {args.charge_key!r} and multiplicity {args.multiplicity_key!r} must be whole "
            f"numbers, got {atoms.info.get(args.charge_key)!r} and {atoms.info.get(args.multiplicity_key)!r}"
        ) from error
    # A fresh calculator per frame: reusing one would start each SCF from the previous frame's
    # density, which makes the labels depend on the order of the frames.
    return TBLite(
        method=args.method,
        charge=charge,
        multiplicity=multiplicity,
        max_iterations=args.max_iterations,
        accuracy=args.accuracy,
        electronic_temperature=args.electronic_temperature,
        verbosity=0,
    )


def label_frame(atoms: ase.Atoms, args: argparse.Namespace, requested: dict[str, str], where: str) -> None:
    """Run xTB on a copy of ``atoms`` and store the requested results in ``atoms`` itself.

    Raises DataError when a key already exists in the frame, and CalculationFailed or InputError
    when xTB fails.
    """
    for quantity, key in requested.items():
        if find_label(atoms, key) is not None:
            raise DataError(
                f"{where}: the frame already has an entry {key!r}; pass --{quantity}-key with another name "
                f"(for example xtb_{quantity}) so that the existing label is kept"
            )

    work = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = make_calculator(args, atoms, where)
    dipole = np.array(work.get_dipole_moment(), dtype=np.float64)
    results = work.calc.results

    atoms.info[requested["dipole"]] = dipole
    if "energy" in requested:
        atoms.info[requested["energy"]] = float(results["energy"])
    if "forces" in requested:
        atoms.arrays[requested["forces"]] = np.array(results["forces"], dtype=np.float64)
    if "charges" in requested:
        atoms.arrays[requested["charges"]] = np.array(results["charges"], dtype=np.float64)


def label_file(args: argparse.Namespace) -> tuple[int, int]:
    """Label every selected frame of ``args.input`` and write ``args.output`` atomically.

    Returns the numbers of frames written and skipped.
    """
    if args.output.exists() and not args.overwrite:
        raise DataError(f"{args.output}: file exists; pass --overwrite to replace it")
    if args.max_iterations < 1:
        raise DataError(f"--max-iterations must be at least 1, got {args.max_iterations}")
    requested = output_keys(args)
    frames = read_frames(args.input, args.index, args.input_format)
    if any(atoms.pbc.any() for atoms in frames):
        logger.warning("some frames are periodic: their dipole depends on the cell and the origin of the coordinates")

    total = len(frames)
    logger.info("labelling %d frames of %s with %s", total, args.input, args.method)
    report_every = max(1, total // 10)
    written, skipped = 0, 0
    start = time.perf_counter()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", dir=args.output.parent, prefix=f".{args.output.name}.", suffix=".tmp", delete=False
    )
    temporary = Path(handle.name)
    try:
        with handle:
            for position, atoms in enumerate(frames):
                where = f"{args.input}, frame {position} of the selection"
                try:
                    label_frame(atoms, args, requested, where)
                except (CalculationFailed, InputError) as error:
                    if args.on_failure == "abort":
                        raise DataError(
                            f"{where}: xTB failed ({error}); nothing was written. Raise --max-iterations if "
                            "the SCF did not converge, or pass --on-failure skip to leave such frames out"
                        ) from error
                    logger.warning("%s: xTB failed (%s); frame left out", where, error)
                    skipped += 1
                else:
                    ase.io.write(handle, atoms, format="extxyz")
                    written += 1
                if (position + 1) % report_every == 0 or position + 1 == total:
                    elapsed = time.perf_counter() - start
                    logger.info("%d/%d frames (%d skipped), %.1f s", position + 1, total, skipped, elapsed)
            if written == 0:
                raise DataError(f"{args.input}: xTB failed on all {total} frames; nothing was written")
            handle.flush()
            os.fsync(handle.fileno())
        # NamedTemporaryFile creates the file readable by its owner only; give it the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, args.output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    logger.info("wrote %d frames to %s (%d skipped)", written, args.output, skipped)
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success, 1 on an error)."""
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    try:
        label_file(args)
    except MLPotError as error:
        logger.error("error: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
