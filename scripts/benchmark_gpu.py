"""Measure mlpot on a GPU: training throughput, energy+forces calls and MD steps per second.

Runs, in order, with every result in --output:

1. ``benchmark_speed.py --packages mlpot --device cuda``: ms per call for aspirin and the water
   boxes in float32 and float64, and training throughput on rMD17 ethanol (``speed/``);
2. ``benchmark_md.py --device cuda``: ms per MD step with and without a neighbour-list skin
   (``md.md``).

It needs no peer environments and takes a few minutes. Usage:

    python scripts/benchmark_gpu.py --output runs/benchmarks/gpu
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks/gpu"), help="result folder")
    parser.add_argument("--water-sizes", default="192,1536,12288", help="atoms of the water boxes to time")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device found by torch; run this script on a machine with a GPU")
    args.output.mkdir(parents=True, exist_ok=True)
    speed = [
        sys.executable, str(SCRIPTS / "benchmark_speed.py"),
        "--packages", "mlpot", "--device", "cuda",
        "--water-sizes", args.water_sizes,
        "--output", str(args.output / "speed"),
    ]  # fmt: skip
    subprocess.run(speed, check=True)
    with open(args.output / "md.md", "w") as stream:
        subprocess.run([sys.executable, str(SCRIPTS / "benchmark_md.py"), "--device", "cuda"], check=True, stdout=stream)
    print(f"results in {args.output}: speed/speed.md and md.md")


if __name__ == "__main__":
    main()
