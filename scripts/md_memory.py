"""Measure the memory and the time per step of a long NVE run through MLPotCalculator.

The run is velocity Verlet MD (0.5 fs steps, velocities drawn at 300 K) of acetylacetone, 15 atoms
from the first frame of the bundled test_MD_300K.xyz, with a trained model. After every --interval
steps the script prints the resident memory of the process (VmRSS), its peak so far (ru_maxrss),
the time per step and the change of the total energy. A leak shows as resident memory that keeps
growing after the first thousand steps.

Without --model, the script first trains the bundled demonstration config (data/configs/
acetylacetone.yaml) for --train-minutes into --work-dir and uses its model.pt.

Memory: the peak comes from resource.getrusage (ru_maxrss), the current value from psutil when
it is installed, else from VmRSS in /proc/self/status. Linux updates the peak lazily, so it can
trail the current value by a fraction of a MiB. On CUDA the peak allocated GPU memory is printed too.

Usage: python scripts/md_memory.py [--model model.pt] [--steps 20000] [--interval 1000]
       [--device cpu] [--threads 1] [--skin 1.0] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import ase.io
import torch
from ase.md.verlet import VelocityVerlet
from ase.units import fs

REPOSITORY = Path(__file__).resolve().parents[1]
STRUCTURE = REPOSITORY / "data" / "acetylacetone" / "test_MD_300K.xyz"
DEMO_CONFIG = REPOSITORY / "data" / "configs" / "acetylacetone.yaml"
MIB = 2**20


def peak_resident_mib() -> float:
    """Return the peak resident memory of this process in MiB (ru_maxrss: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def resident_mib() -> float:
    """Return the current resident memory of this process in MiB, or NaN where neither source exists."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return psutil.Process().memory_info().rss / MIB
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def train_demo_model(folder: Path, minutes: float) -> Path:
    """Train the demonstration config for ``minutes`` and return the path of its model.pt."""
    from mlpot.config import load_config
    from mlpot.training.run import train

    config = load_config(DEMO_CONFIG)
    config.training.output = str(folder / "run")
    config.training.max_time = minutes
    config.training.device = "cpu"
    config.training.progress_bar = False
    config.data.test_file = None
    return train(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file to run; default: train the demonstration model first")
    parser.add_argument("--train-minutes", type=float, default=5.0, help="training time without --model (default 5)")
    parser.add_argument("--work-dir", type=Path, help="folder for the trained model (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=20_000, help="MD steps of 0.5 fs (default 20000)")
    parser.add_argument("--interval", type=int, default=1000, help="steps between measurements (default 1000)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--skin", type=float, default=1.0, help="neighbour-list skin in Å, as mlpot md uses (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities (default 0)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also print the Python allocations that grew most (slows the run)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mlpot.calculator import MLPotCalculator
    from mlpot.md import initialise_velocities

    model_path = args.model
    if model_path is None:
        work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="md_memory_"))
        print(f"training the demonstration model for up to {args.train_minutes} minutes in {work_dir}", flush=True)
        model_path = train_demo_model(work_dir, args.train_minutes)

    atoms = ase.io.read(STRUCTURE, index=0)
    atoms.calc = MLPotCalculator(model_path, device=args.device, skin=args.skin)
    initialise_velocities(atoms, 300.0, args.seed)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * fs)
    initial_energy = atoms.get_total_energy()

    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {args.threads} torch thread(s)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"model: {model_path}; {len(atoms)} atoms on {args.device}, skin {args.skin} Å, {args.steps} steps of 0.5 fs")
    print()
    print("| step | VmRSS MiB | peak RSS MiB | ms/step (interval) | E_total - E_0 meV |")
    print("|---:|---:|---:|---:|---:|")
    if args.tracemalloc:
        tracemalloc.start()
    baseline = None
    rows = {}
    done = 0
    started = time.perf_counter()
    while done < args.steps:
        chunk = min(args.interval, args.steps - done)
        chunk_start = time.perf_counter()
        dynamics.run(chunk)
        elapsed = time.perf_counter() - chunk_start
        done += chunk
        drift = 1000.0 * (atoms.get_total_energy() - initial_energy)
        rows[done] = (resident_mib(), peak_resident_mib(), 1000.0 * elapsed / chunk)
        print(f"| {done} | {rows[done][0]:.1f} | {rows[done][1]:.1f} | {rows[done][2]:.3f} | {drift:.2f} |", flush=True)
        if args.tracemalloc and baseline is None:
            baseline = tracemalloc.take_snapshot()
    total = time.perf_counter() - started

    first = min(rows)
    print()
    print(f"after {first} steps: VmRSS {rows[first][0]:.1f} MiB, peak {rows[first][1]:.1f} MiB")
    print(f"after {done} steps: VmRSS {rows[done][0]:.1f} MiB, peak {rows[done][1]:.1f} MiB")
    print(f"VmRSS growth from step {first} to {done}: {rows[done][0] - rows[first][0]:+.1f} MiB")
    print(f"time per step: {1000.0 * total / done:.3f} ms over {done} steps ({total:.0f} s)")
    print(f"neighbour-list builds: {atoms.calc.neighbour_list_builds}")
    if torch.device(args.device).type == "cuda":
        print(f"peak allocated GPU memory: {torch.cuda.max_memory_allocated() / MIB:.1f} MiB")
    if args.tracemalloc and baseline is not None:
        print("\nPython allocations that grew most since the first interval:")
        for statistic in tracemalloc.take_snapshot().compare_to(baseline, "lineno")[:10]:
            print(f"  {statistic}")


if __name__ == "__main__":
    main()
