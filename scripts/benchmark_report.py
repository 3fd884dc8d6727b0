"""Combine the results of several accuracy and speed runs into one report and the two figures.

Runs made separately, for example the peers in one invocation and mlpot's equivariant model with
``--mlpot-set model=equivariant`` in another, go into the same tables and figures:

    python scripts/benchmark_report.py --accuracy A/accuracy.json B/accuracy.json \\
        --speed C/speed.json D/speed.json --output runs/benchmarks/combined --figures docs/figures

The report lists the command, machine and date of every input, since they may differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import plots, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy", type=Path, nargs="*", default=[], help="accuracy.json files")
    parser.add_argument("--speed", type=Path, nargs="*", default=[], help="speed.json files")
    parser.add_argument("--output", type=Path, required=True, help="folder for report.md and the figures")
    parser.add_argument("--figures", type=Path, help="also write the figures here, e.g. docs/figures")
    return parser


def read_results(paths: list[Path], kind: str) -> list[dict]:
    """Load result files, checking that each is of the expected kind."""
    loaded = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"error: {path} not found")
        results = json.loads(path.read_text())
        expected = {"accuracy": "runs", "speed": "calls"}[kind]
        if expected not in results:
            raise SystemExit(f"error: {path} is not the {kind}.json of a benchmark run")
        loaded.append(results)
    return loaded


def sources_markdown(results: list[dict], title: str) -> str:
    """Format one header per input file, with its command, machine, date and package versions."""
    return "\n\n".join(report.header_markdown(item, f"{title}, run {index + 1}") for index, item in enumerate(results))


def merge_accuracy(results: list[dict]) -> dict:
    merged = dict(results[0])
    merged["runs"] = [run for item in results for run in item["runs"]]
    merged["datasets"] = {name: info for item in results for name, info in item["datasets"].items()}
    return merged


def merge_speed(results: list[dict]) -> dict:
    merged = dict(results[0])
    merged["calls"] = [call for item in results for call in item["calls"]]
    merged["throughput"] = [entry for item in results for entry in item.get("throughput", [])]
    return merged


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    if not args.accuracy and not args.speed:
        raise SystemExit("error: give at least one --accuracy or --speed file")
    accuracy = read_results(args.accuracy, "accuracy")
    speed = read_results(args.speed, "speed")
    args.output.mkdir(parents=True, exist_ok=True)
    parts, figures = ["# Benchmark report", ""], []

    if accuracy:
        merged = merge_accuracy(accuracy)
        parts += [sources_markdown(accuracy, "Accuracy"), "", report.accuracy_markdown(merged, header=False), ""]
        figures.append(plots.plot_force_error_against_time(merged["runs"], args.output / "benchmark_force_mae_vs_time.png"))
    if speed:
        merged = merge_speed(speed)
        parts += [sources_markdown(speed, "Speed"), "", report.speed_markdown(merged), ""]
        if merged["throughput"]:
            parts += [report.throughput_markdown(merged), ""]
        figures.append(plots.plot_cost_per_call(merged["calls"], args.output / "benchmark_cost_per_call.png"))

    if accuracy or speed:
        runs = merge_accuracy(accuracy)["runs"] if accuracy else []
        speed_results = merge_speed(speed) if speed else {"calls": [], "throughput": []}
        targets = report.targets_markdown(runs, speed_results["calls"], speed_results["throughput"])
        parts += ["## Targets", "", targets, ""]

    path = args.output / "report.md"
    path.write_text("\n".join(parts))
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for figure in figures:
            (args.figures / figure.name).write_bytes(figure.read_bytes())
    print(f"report written to {path}")
    return path


if __name__ == "__main__":
    main()
