"""Run the whole comparison of mlpot with MACE and SchNetPack: accuracy, then speed, then one report.

Usage:
    python scripts/benchmark_all.py --peer-venvs VENVS --figures docs/figures
    python scripts/benchmark_all.py --peer-venvs VENVS --quick      # trial run of every step

Runs scripts/benchmark_accuracy.py (all datasets, ``--budget-minutes`` each, or
``--converged``), then scripts/benchmark_speed.py with the aspirin models of that run, and
writes report.md (all tables) beside accuracy.json and speed.json in --output.

``--quick`` shrinks every step: 1-minute budgets on 50 frames, the smallest water box, two
timed calls per measurement and throughput on 50 frames. Its numbers only show that every
step runs. Create VENVS first with scripts/benchmark_setup.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import benchmark_accuracy
import benchmark_speed
from bench.common import default_output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-venvs", help="folder with the mace/ and schnetpack/ virtual environments")
    parser.add_argument("--output", type=Path, help="result folder (default runs/benchmarks/all-DATE)")
    parser.add_argument("--figures", type=Path, help="also write the figures here, e.g. docs/figures")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=8.0,
        help="training wall time per package and dataset (default 8)",
    )
    parser.add_argument(
        "--converged",
        action="store_true",
        help="train without a time limit (see benchmark_accuracy.py)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch threads of every worker (default: torch's choice)")
    parser.add_argument("--packages", default="mlpot,mace,schnetpack", help="comma-separated subset of the packages")
    parser.add_argument("--quick", action="store_true", help="cut every step to a trial size")
    parser.add_argument("--echo", action="store_true", help="print the workers' output while they run")
    args = parser.parse_args()

    output = (args.output or default_output("all")).resolve()
    shared = ["--packages", args.packages]
    if args.peer_venvs:
        shared += ["--peer-venvs", args.peer_venvs]
    if args.threads:
        shared += ["--threads", str(args.threads)]
    if args.echo:
        shared.append("--echo")

    accuracy_arguments = [*shared, "--output", str(output / "accuracy"), "--device", args.device]
    if args.converged:
        accuracy_arguments.append("--converged")
    else:
        accuracy_arguments += ["--budget-minutes", str(1.0 if args.quick else args.budget_minutes)]
    if args.quick:
        accuracy_arguments += ["--train-limit", "50", "--test-limit", "50"]
    accuracy_results = benchmark_accuracy.main(accuracy_arguments)

    speed_arguments = [*shared, "--output", str(output / "speed"), "--accuracy-results", str(accuracy_results)]
    if args.figures:
        speed_arguments += ["--figures", str(args.figures)]
    if args.quick:
        speed_arguments += [
            "--water-sizes", "192",
            "--min-calls", "2",
            "--min-seconds", "1",
            "--throughput-epochs", "2",
            "--throughput-frames", "50",
        ]  # fmt: skip
    speed_results = benchmark_speed.main(speed_arguments)

    report = output / "report.md"
    accuracy_markdown = (accuracy_results.parent / "accuracy.md").read_text()
    speed_markdown = (speed_results.parent / "speed.md").read_text()
    report.write_text(accuracy_markdown + "\n" + speed_markdown)
    print(f"\nreport written to {report}")


if __name__ == "__main__":
    main()
