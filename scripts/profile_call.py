"""Profile energy+forces calls of MLPotCalculator on periodic water boxes with torch.profiler.

For each box size, the script times a few calls, then records one call with torch.profiler and
prints the operators with the largest self CPU time, in ms per call and in µs per atom. Comparing
two sizes shows which operators grow faster than the number of atoms. The model is untrained
with the default architecture (timing does not depend on the weights).

Usage: python scripts/profile_call.py --sizes 1536,12288 --threads 1 [--dtype float64] [--top 20]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch
from ase.calculators.calculator import all_changes
from torch.profiler import ProfilerActivity, profile

from benchmark_md import build_potential, water_box
from mlpot.calculator import MLPotCalculator

#: Molecules per edge of the water boxes by number of atoms.
WATER_SIZES = {192: 4, 1536: 8, 12288: 16}


def call(calculator: MLPotCalculator, atoms, rng: np.random.Generator) -> float:
    """Move every atom by 0.001 Å, compute energy and forces, and return the seconds taken."""
    atoms.positions = atoms.positions + rng.normal(scale=0.001, size=atoms.positions.shape)
    start = time.perf_counter()
    calculator.calculate(atoms, ["energy", "forces"], all_changes)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1536,12288", help="atoms of the water boxes: 192, 1536, 12288")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls before the profiled one (default 3)")
    parser.add_argument("--top", type=int, default=20, help="operators to list (default 20)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    calculator = MLPotCalculator(build_potential(args.dtype), device="cpu")
    rng = np.random.default_rng(0)
    for size in (int(text) for text in args.sizes.split(",")):
        if size not in WATER_SIZES:
            raise SystemExit(f"error: invalid size {size}; expected one of {', '.join(map(str, WATER_SIZES))}")
        atoms = water_box(WATER_SIZES[size])
        call(calculator, atoms, rng)  # untimed warm-up
        seconds = statistics.median(call(calculator, atoms, rng) for _ in range(args.calls))
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            call(calculator, atoms, rng)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"\n## water {size} atoms, {args.dtype}: {1000 * seconds:.1f} ms per call, {1e6 * seconds / size:.0f} µs/atom, peak RSS so far {peak_gb:.2f} GB\n")
        events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
        total = sum(event.self_cpu_time_total for event in events)
        print("| operator | calls | self ms | share | self µs/atom |")
        print("|---|---:|---:|---:|---:|")
        for event in events[: args.top]:
            milliseconds = event.self_cpu_time_total / 1000.0
            share = event.self_cpu_time_total / total
            print(f"| {event.key} | {event.count} | {milliseconds:.1f} | {share:.1%} | {1000 * milliseconds / size:.1f} |")


if __name__ == "__main__":
    main()
