"""``mlpot md``: molecular dynamics of one structure with a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlpot.cli.common import make_output_safe
from mlpot.md import ENSEMBLES, MDSettings


def add_parser(subparsers) -> None:
    defaults = MDSettings()
    parser = subparsers.add_parser(
        "md",
        help="run molecular dynamics (NVE or Langevin NVT) with a trained model",
        description=(
            "Run molecular dynamics of the last structure in STRUCTURE with the model in MODEL, starting from "
            "Maxwell-Boltzmann velocities without net translation (or rotation, for a molecule), scaled so that "
            "the initial temperature equals --temperature as ASE counts it (3 degrees of freedom per atom). "
            "After the run, a warning on stderr flags a mean temperature above 3 times the target, or an NVE "
            "total-energy change above 10 meV/atom per ps plus 5 meV/atom. Units: fs, K, eV, Å."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model file written by mlpot train (model.pt)")
    parser.add_argument("structure", metavar="STRUCTURE", help="structure file in any format ASE reads (bundled:NAME for a bundled dataset); the last frame is used")
    parser.add_argument(
        "--ensemble", choices=ENSEMBLES, default=defaults.ensemble, help="nve: velocity Verlet; nvt: Langevin (default nve)"
    )
    parser.add_argument(
        "--temperature", type=float, default=defaults.temperature, help="temperature in K that the initial velocities are scaled to exactly, and of the nvt thermostat (default 300)"
    )
    parser.add_argument("--timestep", type=float, default=defaults.timestep, help="time step in fs (default 0.5)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="number of time steps (default 1000)")
    parser.add_argument(
        "--friction", type=float, default=defaults.friction, help="Langevin friction in 1/fs, nvt only (default 0.01)"
    )
    parser.add_argument(
        "--trajectory",
        metavar="OUT.extxyz",
        help="extended-XYZ file for frames with energy, forces, momenta and (if the model has a dipole head) dipole; "
        "an existing file is replaced only with --overwrite",
    )
    parser.add_argument(
        "--interval", type=int, default=defaults.interval, help="steps between trajectory frames and log lines (default 10)"
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="text log of step, time (fs), potential, kinetic and total energy (eV), temperature (K); an existing "
        "file is replaced only with --overwrite",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing --trajectory and --log files")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the initial velocities and Langevin noise (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), help="floating-point type of the evaluation (default: the model's own)"
    )
    parser.add_argument(
        "--skin",
        type=float,
        default=1.0,
        help="extra neighbour-list radius in Å; the list is rebuilt once an atom moves half of it (default 1.0)",
    )
    parser.add_argument("--compile", action="store_true", help="compile the energy network with torch.compile")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); 1 is often fastest for small molecules or on a busy machine",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from mlpot.calculator import MLPotCalculator
    from mlpot.config import resolve_data_path
    from mlpot.data.io import read_structures
    from mlpot.errors import ConfigError
    from mlpot.md import run_md

    make_output_safe()
    settings = MDSettings(
        ensemble=args.ensemble,
        temperature=args.temperature,
        timestep=args.timestep,
        steps=args.steps,
        friction=args.friction,
        interval=args.interval,
        seed=args.seed,
    )
    settings.validate()
    if not args.skin >= 0:
        raise ConfigError(f"skin must be 0 Å or more, got {args.skin}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"threads must be 1 or more, got {args.threads}")
        torch.set_num_threads(args.threads)
    check_output_files(args.trajectory, args.log, args.overwrite)

    calculator = MLPotCalculator(args.model, device=args.device, dtype=args.dtype, skin=args.skin, compile=args.compile)
    structure = read_structures(resolve_data_path(args.structure), labels=(), elements=calculator.elements, index=-1)[0]
    atoms = structure.atoms
    atoms.calc = calculator

    # run_md logs its stability warnings, which the command line's logging prints to stderr.
    summary = run_md(atoms, settings, trajectory=args.trajectory, log=args.log, progress=not args.no_progress)
    drift = summary.final_total_energy - summary.initial_total_energy
    if summary.steps == 0:
        print(f"0 steps run on {len(atoms)} atoms: only the initial state was computed")
        print(
            f"initial temperature {summary.initial_temperature:.1f} K, "
            f"total energy {summary.initial_total_energy:.6f} eV"
        )
    else:
        print(
            f"{summary.steps} steps of {settings.timestep} fs ({settings.ensemble}) on {len(atoms)} atoms in "
            f"{summary.wall_time:.1f} s ({summary.milliseconds_per_step:.2f} ms/step)"
        )
        print(
            f"initial temperature {summary.initial_temperature:.1f} K, mean temperature "
            f"{summary.mean_temperature:.1f} K, total energy change {1000 * drift:.3f} meV"
        )
    if args.trajectory:
        print(f"trajectory written to {args.trajectory}")
    if args.log:
        print(f"log written to {args.log}")
    return 0


def check_output_files(trajectory: str | None, log: str | None, overwrite: bool) -> None:
    """Raise ConfigError when an output file exists and ``overwrite`` is off, or both outputs are one file."""
    from mlpot.errors import ConfigError

    if trajectory and log and Path(trajectory).resolve() == Path(log).resolve():
        raise ConfigError(f"--trajectory and --log both name {trajectory}; give them different files")
    if overwrite:
        return
    for option, path in (("--trajectory", trajectory), ("--log", log)):
        if path and Path(path).exists():
            raise ConfigError(
                f"{option} {path} already exists; pass --overwrite to replace it, or choose another file name"
            )
