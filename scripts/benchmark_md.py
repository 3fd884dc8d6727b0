"""Time MD steps of MLPotCalculator with and without a neighbour-list skin and print a Markdown table.

Systems: acetylacetone (15 atoms, no periodicity) and periodic water boxes of 192 and 1536 atoms at
about 1 g/cm³, built from molecules on a grid with random orientations. The model is untrained
(timing does not depend on the weights) with the default architecture of mlpot.config.ModelConfig
and elements H, C, O. Its energy scale is small so that the atoms move about as fast as thermal
motion at 300 K makes them, which sets how often the skin list is rebuilt.

Usage: python scripts/benchmark_md.py [--device cuda] [--dtype float64] [--threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch
from ase.build import molecule
from ase.md.verlet import VelocityVerlet
from ase.units import fs

from bench.common import cpu_model
from mlpot.calculator import MLPotCalculator
from mlpot.config import ModelConfig
from mlpot.md import initialise_velocities
from mlpot.models.potential import Potential

REPOSITORY = Path(__file__).resolve().parents[1]
#: Mass of one water molecule in g.
WATER_MASS_G = 18.015 / 6.02214076e23


def water_box(molecules_per_side: int, density: float = 1.0, seed: int = 0) -> ase.Atoms:
    """Build a cubic periodic water box with molecules on a grid, each randomly rotated.

    Args:
        molecules_per_side: grid points per edge; the box has its cube molecules.
        density: mass density in g/cm³, which sets the edge length.
    """
    rng = np.random.default_rng(seed)
    count = molecules_per_side**3
    volume_angstrom3 = count * WATER_MASS_G / density * 1e24
    length = volume_angstrom3 ** (1.0 / 3.0)
    spacing = length / molecules_per_side
    template = molecule("H2O")
    template.positions -= template.get_center_of_mass()
    positions, symbols = [], []
    for index in np.ndindex(molecules_per_side, molecules_per_side, molecules_per_side):
        # QR of a Gaussian matrix, with signs fixed, gives a uniformly random orthogonal matrix.
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        rotation = q * np.sign(np.diag(r))
        if np.linalg.det(rotation) < 0:
            rotation[:, 0] *= -1.0
        centre = (np.array(index) + 0.5) * spacing
        positions.append(template.positions @ rotation.T + centre)
        symbols += list(template.get_chemical_symbols())
    return ase.Atoms(symbols=symbols, positions=np.concatenate(positions), cell=[length] * 3, pbc=True)


def build_potential(dtype: str) -> Potential:
    torch.manual_seed(0)
    config = ModelConfig(dtype=dtype)
    return Potential(config, [1, 6, 8], [-13.6, -1026.9, -2037.8], energy_scale=0.01, avg_num_neighbours=30.0)


def time_md(
    atoms: ase.Atoms, potential: Potential, skin: float, steps: int, args: argparse.Namespace
) -> dict[str, float]:
    """Run velocity Verlet at 0.5 fs and return the mean and median ms per step, edges and list builds.

    The median is less sensitive than the mean to other processes that share the CPU.
    """
    atoms = atoms.copy()
    calculator = MLPotCalculator(potential, device=args.device, skin=skin, compile=args.compile)
    atoms.calc = calculator
    initialise_velocities(atoms, temperature=300.0, seed=0)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * fs)
    dynamics.run(3)  # warm-up: first list, allocator, compilation
    builds_before = calculator.neighbour_list_builds
    stamps = []

    def stamp() -> None:
        synchronise(args.device)
        stamps.append(time.perf_counter())

    dynamics.attach(stamp, interval=1)
    stamp()
    dynamics.run(steps)
    step_times = np.diff(stamps)
    return {
        "ms_per_step": 1000.0 * float(np.mean(step_times)),
        "median_ms_per_step": 1000.0 * float(np.median(step_times)),
        "edges": calculator.neighbour_list_edges,
        "builds": calculator.neighbour_list_builds - builds_before,
    }


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="model dtype (default float32)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--skins", default="0,0.5,1.0", help="comma-separated skins in Å (default 0,0.5,1.0)")
    parser.add_argument("--steps", type=float, default=1.0, help="multiplier of the timed steps per system (default 1)")
    parser.add_argument("--compile", action="store_true", help="compile the energy network with torch.compile")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    acetylacetone = ase.io.read(REPOSITORY / "data" / "acetylacetone" / "train_300K.xyz", index=0)
    acetylacetone.calc = None
    systems = [
        ("acetylacetone", acetylacetone, 100),
        ("water, 192 atoms", water_box(4), 30),
        ("water, 1536 atoms", water_box(8), 6),
    ]
    potential = build_potential(args.dtype)
    skins = [float(value) for value in args.skins.split(",")]

    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(device)})"
    print(f"# MD step timings, {datetime.date.today().isoformat()}")
    print()
    print(f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads: {torch.get_num_threads()}")
    print(f"- device: {device}, dtype: {args.dtype}, torch {torch.__version__}, compile: {args.compile}")
    print(f"- model: default ModelConfig (cutoff {potential.cutoff} Å), untrained; velocity Verlet, 0.5 fs, 300 K")
    print()
    print("| system | atoms | skin (Å) | edges in list | list builds | timed steps | mean ms/step | median ms/step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, atoms, steps in systems:
        steps = max(1, round(steps * args.steps))
        for skin in skins:
            result = time_md(atoms, potential, skin, steps, args)
            print(
                f"| {name} | {len(atoms)} | {skin:g} | {result['edges']} | {result['builds']} | {steps} "
                f"| {result['ms_per_step']:.1f} | {result['median_ms_per_step']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
