"""Time energy+forces calls of one package's ASE calculator on one structure, in a fresh process.

Usage: python -m bench.workers.speed --package {mlpot,mace,schnetpack} --model FILE
       --structure S.xyz --dtype {float32,float64} [--device cuda] [--min-calls 5] [--min-seconds 5]

Each call first moves every atom by a seeded Gaussian step of 0.001 Å, so the calculator gets
new positions and recomputes. It then requests energy and forces together in one
``calculator.calculate(atoms, ["energy", "forces"], all_changes)``, which every ASE calculator
implements. (Separate get_potential_energy and get_forces calls would make SchNetPack's
calculator evaluate its model twice, since it stores only the requested property.)
Every calculator returns its results as NumPy arrays, so on a GPU a timed call includes the wait
for the device. The first ``--warmup`` calls are not timed. Timed calls go on
until both ``--min-calls`` and ``--min-seconds`` are reached, or ``--max-calls``.

Memory: ``resource.getrusage`` max RSS of this process at the end (peak), and the peak before
the first call, after imports, model loading and reading the structure (baseline). Both include
everything torch allocates on the CPU, which tracemalloc would not see. ``--memory-limit-gb``
caps the process's data segment (RLIMIT_DATA), so that an oversized system fails with an
allocation error instead of exhausting the machine's memory.

Prints one line ``BENCH_SPEED {json}``, or ``BENCH_OUT_OF_MEMORY {json}`` when an allocation
failed under the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import warnings
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.calculator import all_changes


def make_calculator(package: str, model: Path, dtype: str, device: str = "cpu"):
    """Return the package's ASE calculator for ``model`` evaluating in ``dtype`` on ``device``, and its neighbour list."""
    if package == "mlpot":
        from mlpot.calculator import MLPotCalculator

        with warnings.catch_warnings():
            # Evaluating in a dtype other than the training one warns; the benchmark does that on purpose.
            warnings.simplefilter("ignore", UserWarning)
            calculator = MLPotCalculator(str(model), device=device, dtype=dtype)
            return calculator, "mlpot's own: all pairs up to 64 atoms without periodicity, else vesin"
    if package == "mace":
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=str(model), device=device, default_dtype=dtype), "matscipy (MACE's own)"
    if package == "schnetpack":
        from bench.workers import spk_compat  # noqa: F401  (must precede schnetpack)

        import torch
        from schnetpack.interfaces import SpkCalculator
        from schnetpack.transform import MatScipyNeighborList

        calculator = SpkCalculator(
            model_file=str(model),
            neighbor_list=MatScipyNeighborList(cutoff=5.0),
            energy_key="energy",
            force_key="forces",
            energy_unit="eV",
            position_unit="Ang",
            device=device,
            dtype=getattr(torch, dtype),
        )
        return calculator, "matscipy (MatScipyNeighborList, as in SchNetPack's rMD17 config)"
    raise ValueError(f"unknown package {package!r}; expected mlpot, mace or schnetpack")


def peak_rss_mb() -> float:
    """Largest resident set size of this process so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", choices=("mlpot", "mace", "schnetpack"), required=True)
    parser.add_argument("--model", type=Path, required=True, help="model file of the package")
    parser.add_argument("--structure", type=Path, required=True, help="extxyz file; its first frame is timed")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device of the model (default cpu)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--min-calls", type=int, default=5, help="minimum number of timed calls (default 5)")
    parser.add_argument("--min-seconds", type=float, default=5.0, help="minimum total timed seconds (default 5)")
    parser.add_argument("--max-calls", type=int, default=200, help="maximum number of timed calls (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit-gb", type=float, help="maximum data segment of this process in GB")
    args = parser.parse_args()
    if args.memory_limit_gb:
        limit = int(args.memory_limit_gb * 1e9)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    import torch

    if os.environ.get("MLPOT_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["MLPOT_BENCH_THREADS"]))
    atoms = ase.io.read(args.structure, index=0)
    atoms.calc = None
    calculator, neighbour_list = make_calculator(args.package, args.model, args.dtype, args.device)
    rng = np.random.default_rng(args.seed)
    baseline_mb = peak_rss_mb()

    def call() -> float:
        atoms.positions = atoms.positions + rng.normal(scale=0.001, size=atoms.positions.shape)
        start = time.perf_counter()
        calculator.calculate(atoms, ["energy", "forces"], all_changes)
        elapsed = time.perf_counter() - start
        results = calculator.results
        if not (np.isfinite(results["energy"]) and np.all(np.isfinite(results["forces"]))):
            raise FloatingPointError(f"{args.package} returned a non-finite energy or force for {args.structure}")
        return elapsed

    times: list[float] = []
    try:
        first = call()
        for _ in range(args.warmup - 1):
            call()
        while len(times) < args.max_calls and (len(times) < args.min_calls or sum(times) < args.min_seconds):
            times.append(call())
    except (MemoryError, RuntimeError) as error:
        # torch reports a failed CPU allocation as RuntimeError ("DefaultCPUAllocator: can't allocate memory").
        if not isinstance(error, MemoryError) and "allocate" not in str(error):
            raise
        report = {"peak_rss_mb": peak_rss_mb(), "memory_limit_gb": args.memory_limit_gb, "error": str(error)[:300]}
        print("BENCH_OUT_OF_MEMORY " + json.dumps(report), flush=True)
        raise SystemExit(4) from None

    report = {
        "package": args.package,
        "dtype": args.dtype,
        "atoms": len(atoms),
        "calls": len(times),
        "first_call_ms": 1000.0 * first,
        "median_ms": 1000.0 * statistics.median(times),
        "mean_ms": 1000.0 * statistics.fmean(times),
        "min_ms": 1000.0 * min(times),
        "us_per_atom": 1e6 * statistics.median(times) / len(atoms),
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline_mb,
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "torch": torch.__version__,
        "neighbour_list": neighbour_list,
    }
    print("BENCH_SPEED " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
