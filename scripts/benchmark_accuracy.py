"""Train mlpot, MACE and SchNetPack on the same data under the same budget and compare test errors.

Datasets: rMD17 ethanol and aspirin (split 01: 950 training and 50 validation frames of the
training file, 1000 test frames) and acetylacetone at 300 K (450/50 of train_300K.xyz, 650 test
frames of test_MD_300K.xyz). bench/datasets.py writes them once in eV and eV/Å for all packages.

Each package trains for ``--budget-minutes`` of wall time per dataset (8 by default) in its own
process, or with ``--converged`` until its own epoch limit or early stopping. Every model then
predicts the same test frames, and the errors are computed here in one way for all: energy MAE
and RMSE in meV (and meV/atom), force-component MAE and RMSE in meV/Å.

mlpot runs in this interpreter's environment; MACE and SchNetPack in the virtual environments
made by scripts/benchmark_setup.py (``--peer-venvs DIR``). MACE trains with the settings of its
paper's rMD17 experiments in converged and GPU runs. CPU runs under a budget use the same
settings with the smaller model size that its README recommends (see ``default_mace_settings``).

Examples:
    python scripts/benchmark_accuracy.py --peer-venvs VENVS                   # 8 min each
    python scripts/benchmark_accuracy.py --peer-venvs VENVS --budget-minutes 1 \\
        --datasets ethanol --train-limit 50 --test-limit 50                    # trial run
    python scripts/benchmark_accuracy.py --peer-venvs VENVS --converged --device cuda

Writes accuracy.json and accuracy.md to --output (default runs/benchmarks/accuracy-DATE).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bench import report
from bench.common import (
    PACKAGES,
    BenchmarkError,
    default_output,
    machine_info,
    package_version,
    parse_overrides,
    peer_venvs_folder,
    python_of,
    run_process,
    torch_facts,
    write_json,
)
from bench.datasets import DATASETS, prepare, score_predictions
from bench.training import MACE_SETTINGS, TrainOptions, TrainRun, run_mace, run_mlpot, run_schnetpack

#: Seconds allowed beyond the training budget for start-up, data preparation and model saving.
SETUP_ALLOWANCE_SECONDS = 900.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help=f"comma-separated subset of {', '.join(DATASETS)}",
    )
    parser.add_argument(
        "--packages",
        default=",".join(PACKAGES),
        help=f"comma-separated subset of {', '.join(PACKAGES)}",
    )

    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=8.0,
        help="training wall time per package and dataset (default 8)",
    )
    parser.add_argument(
        "--converged",
        action="store_true",
        help="no time limit: each package trains to its own epoch limit or early stop",
    )
    parser.add_argument("--max-epochs", type=int, help="epoch limit for every package (default: each package's own)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch threads of every worker (default: torch's choice)")

    parser.add_argument(
        "--mace-settings",
        help=f"comma-separated MACE hyperparameter sets, each trained as its own entry: {', '.join(MACE_SETTINGS)} "
        "(see bench/training.py). Default: paper with --converged or --device cuda, small for CPU budget runs",
    )
    parser.add_argument(
        "--mlpot-set", action="append", default=[], metavar="KEY=VALUE", help="extra mlpot config override, repeatable"
    )

    parser.add_argument("--peer-venvs", help="folder with the mace/ and schnetpack/ virtual environments")
    parser.add_argument("--output", type=Path, help="result folder (default runs/benchmarks/accuracy-DATE)")

    parser.add_argument(
        "--train-limit",
        type=int,
        help="keep only this many training and validation frames (trial runs)",
    )
    parser.add_argument("--test-limit", type=int, help="keep only this many test frames (trial runs)")
    parser.add_argument("--memory-limit-gb", type=float, help="stop a worker above this resident memory in GB")
    parser.add_argument("--echo", action="store_true", help="print the workers' output while they run")
    return parser


def split_list(value: str, known, option: str) -> list[str]:
    """Split a comma-separated option value and reject names outside ``known``."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in known]
    if unknown or not items:
        expected = ", ".join(known)
        invalid = unknown or value
        raise SystemExit(f"error: {option}: invalid {invalid!r}; expected a comma-separated subset of {expected}")
    return items


def default_mace_settings(args: argparse.Namespace) -> str:
    """Return "paper" for converged or GPU runs and "small" for CPU runs under a budget.

    The paper's MACE (256 channels, L=2, batch size 5) did not finish its initial validation and
    first epoch of rMD17 ethanol (190 steps) in 10 minutes of mace_run_train on 2 CPU cores
    (mace-torch 0.3.16, torch 2.13, machine shared with other jobs). An 8-minute budget would
    leave it untrained.
    """
    return "paper" if args.converged or args.device == "cuda" else "small"


def train_one(
    entry: dict, dataset_name: str, data, folder: Path, options: TrainOptions, pythons: dict, args
) -> TrainRun:
    """Run the training of one benchmark entry (a package, or MACE with one settings name)."""
    package = entry["package"]
    if package == "mlpot":
        overrides = parse_overrides(args.mlpot_set)
        return run_mlpot(pythons["mlpot"], DATASETS[dataset_name], data, folder, options, overrides)
    if package == "mace":
        return run_mace(pythons["mace"], entry["settings"], data, folder, options)
    return run_schnetpack(pythons["schnetpack"], data, folder, options)


def evaluate(run: TrainRun, data, folder: Path, pythons: dict, options: TrainOptions) -> dict:
    """Predict the test frames with the trained model and return the errors, or the failure."""
    predictions = folder / "predictions.npz"
    command = [
        pythons[run.package], "-m", "bench.workers.predict",
        "--package", run.package,
        "--model", str(run.model),
        "--structures", str(data.test),
        "--output", str(predictions),
    ]  # fmt: skip
    result = run_process(
        command, folder / "predict.log", cwd=folder, threads=options.threads, memory_limit_gb=options.memory_limit_gb
    )
    if not result.ok:
        return {"error": f"prediction {result.failure()}; last output:\n{result.tail(15)}"}
    return score_predictions(data.reference, predictions)


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    datasets = split_list(args.datasets, DATASETS, "--datasets")
    packages = split_list(args.packages, PACKAGES, "--packages")
    mace_settings = split_list(args.mace_settings or default_mace_settings(args), MACE_SETTINGS, "--mace-settings")
    output = (args.output or default_output("accuracy")).resolve()
    venvs = peer_venvs_folder(args.peer_venvs)
    try:
        pythons = {package: python_of(package, venvs) for package in packages}
    except BenchmarkError as error:
        raise SystemExit(f"error: {error}") from None

    budget = None if args.converged else 60.0 * args.budget_minutes
    options = TrainOptions(
        budget_seconds=budget,
        max_epochs=args.max_epochs,
        batch_size=None,
        device=args.device,
        threads=args.threads,
        timeout_seconds=None if budget is None else budget + SETUP_ALLOWANCE_SECONDS,
        memory_limit_gb=args.memory_limit_gb,
        echo=args.echo,
    )
    entries = []
    for package in packages:
        if package == "mace":
            entries += [{"package": "mace", "settings": name, "key": f"mace-{name}"} for name in mace_settings]
        else:
            entries.append({"package": package, "key": package})

    results = {
        "kind": "accuracy",
        "machine": machine_info(args.threads),
        "mode": "converged" if args.converged else f"budget {args.budget_minutes:g} min",
        "budget_minutes": None if args.converged else args.budget_minutes,
        "device": args.device,
        "packages": {p: {"version": package_version(p, pythons[p]), **torch_facts(pythons[p])} for p in packages},
        "datasets": {},
        "runs": [],
    }
    results_path = output / "accuracy.json"
    for dataset_name in datasets:
        data = prepare(
            DATASETS[dataset_name],
            output / "data" / dataset_name,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
        )
        results["datasets"][dataset_name] = data.to_dict()
        for entry in entries:
            folder = output / dataset_name / entry["key"]
            print(f"[{dataset_name}] training {entry['key']} ({results['mode']}) in {folder}", flush=True)
            run = train_one(entry, dataset_name, data, folder, options, pythons, args)
            record = dataclasses.asdict(run)
            if run.error is None:
                record["test"] = evaluate(run, data, folder, pythons, options)
                record["error"] = record["test"].pop("error", None)
            results["runs"].append(record)
            write_json(results_path, results)
            print(report.run_summary(record), flush=True)

    markdown = report.accuracy_markdown(results)
    (output / "accuracy.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\nresults written to {results_path} and {output / 'accuracy.md'}")
    return results_path


if __name__ == "__main__":
    main()
