"""Time energy+forces calls and training throughput of mlpot, MACE and SchNetPack on one machine.

Calls: each package's ASE calculator (mlpot.MLPotCalculator, mace.calculators.MACECalculator,
schnetpack.interfaces.SpkCalculator) in float32 and float64. The systems are aspirin (21 atoms,
the first frame of the rMD17 test file) and periodic water boxes of 192, 1536 and 12288 atoms,
built by scripts/benchmark_md.py. The boxes are at about 1 g/cm³, with molecules on a grid in
seeded random orientations, so the closest O-O distance is the grid spacing of 3.1 Å. Every
measurement runs in a fresh process (bench/workers/speed.py), which reports ms per call, µs per
atom and the process's peak resident memory. After a failure (time or memory limit) the larger systems of
that package and dtype are skipped.

Models: the aspirin models of an accuracy run (``--accuracy-results``), which cover H, C and O.
Entries without one get a model trained here for one epoch on 20 aspirin frames with the same
settings. The cost of a call does not depend on the weights.

Training throughput: each package trains ``--throughput-epochs`` epochs on rMD17 ethanol (950
training frames) with the same batch size, and structures per second come from the time
between the ends of consecutive epochs after the first.

Writes speed.json, speed.md and two figures (cost per call against atoms; with
--accuracy-results also force error against training time) to --output, and the figures also
to --figures when given.

Example: python scripts/benchmark_speed.py --peer-venvs VENVS --figures docs/figures
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import ase
import ase.io
from mlpot.data.io import read_structures

from benchmark_md import water_box
from bench import plots, report
from bench.common import (
    PACKAGES,
    BenchmarkError,
    default_output,
    last_json_line,
    machine_info,
    package_version,
    parse_overrides,
    peer_venvs_folder,
    python_of,
    run_process,
    torch_facts,
    write_json,
)
from bench.datasets import DATASETS, prepare
from bench.training import MACE_SETTINGS, TrainOptions, mlpot_label, run_mace, run_mlpot, run_schnetpack

#: Water boxes by molecules per edge: 4, 8 and 16 give 192, 1536 and 12288 atoms.
WATER_SIZES = {192: 4, 1536: 8, 12288: 16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--packages",
        default=",".join(PACKAGES),
        help=f"comma-separated subset of {', '.join(PACKAGES)}",
    )
    parser.add_argument(
        "--mace-settings",
        default="small,paper",
        help=f"comma-separated MACE settings to time: {', '.join(MACE_SETTINGS)} (default small,paper)",
    )

    parser.add_argument(
        "--mlpot-set", action="append", default=[], metavar="KEY=VALUE", help="extra mlpot config override, repeatable"
    )
    parser.add_argument("--water-sizes", default="192,1536,12288", help="atoms of the water boxes (192, 1536, 12288)")
    parser.add_argument("--dtypes", default="float32,float64", help="evaluation dtypes (float32, float64)")

    parser.add_argument("--min-calls", type=int, default=5, help="minimum timed calls per measurement (default 5)")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=10.0,
        help="minimum timed seconds per measurement (default 10)",
    )
    parser.add_argument(
        "--call-timeout-minutes",
        type=float,
        default=20.0,
        help="time limit of one measurement process in minutes (default 20)",
    )

    parser.add_argument(
        "--throughput-epochs",
        type=int,
        default=3,
        help="epochs per throughput run, 0 to skip (default 3)",
    )
    parser.add_argument(
        "--throughput-batch-size",
        type=int,
        default=10,
        help="batch size of every package (default 10)",
    )
    parser.add_argument(
        "--throughput-frames",
        type=int,
        help="training frames of the throughput runs (default all 950)",
    )

    parser.add_argument(
        "--accuracy-results",
        type=Path,
        help="accuracy.json whose aspirin models are timed and plotted",
    )

    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="device of the timed calls and the throughput training (default cpu)"
    )
    parser.add_argument("--threads", type=int, help="torch threads of every worker (default: torch's choice)")
    parser.add_argument("--peer-venvs", help="folder with the mace/ and schnetpack/ virtual environments")
    parser.add_argument("--output", type=Path, help="result folder (default runs/benchmarks/speed-DATE)")
    parser.add_argument("--figures", type=Path, help="also write the figures to this folder, e.g. docs/figures")

    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        help="stop a measurement above this resident memory in GB (default 75%% of the machine's)",
    )
    parser.add_argument("--echo", action="store_true", help="print the workers' output while they run")
    return parser


def entries_for(packages: list[str], mace_settings: list[str], mlpot_overrides: dict[str, str] | None = None) -> list[dict]:
    """Return one benchmark entry per package, with one per settings name for MACE.

    The label of the mlpot entry lists ``mlpot_overrides``, such as ``mlpot (model=equivariant)``.
    """
    entries = []
    for package in packages:
        if package == "mace":
            entries += [{"package": "mace", "settings": name, "label": f"mace ({name})"} for name in mace_settings]
        elif package == "schnetpack":
            entries.append({"package": package, "label": "schnetpack (PaiNN)"})
        elif package == "mlpot":
            entries.append({"package": package, "label": mlpot_label(mlpot_overrides or {}), "overrides": mlpot_overrides or {}})
        else:
            entries.append({"package": package, "label": package})
    return entries


def train(entry: dict, data, folder: Path, options: TrainOptions, pythons: dict):
    if entry["package"] == "mlpot":
        return run_mlpot(pythons["mlpot"], DATASETS[data.name], data, folder, options, entry.get("overrides", {}))
    if entry["package"] == "mace":
        return run_mace(pythons["mace"], entry["settings"], data, folder, options)
    return run_schnetpack(pythons["schnetpack"], data, folder, options)


def models_from_accuracy(path: Path, entries: list[dict]) -> dict[str, str]:
    """Map entry labels to the aspirin models of an accuracy run."""
    runs = json.loads(path.read_text())["runs"]
    found = {run["label"]: run["model"] for run in runs if run["dataset"] == "aspirin" and run.get("model")}
    return {entry["label"]: found[entry["label"]] for entry in entries if entry["label"] in found}


def brief_models(entries: list[dict], output: Path, pythons: dict, args) -> dict[str, str]:
    """Train every entry for one epoch on 20 aspirin frames and return the model files."""
    data = prepare(DATASETS["aspirin"], output / "data" / "aspirin-20", train_limit=20, test_limit=1)
    options = TrainOptions(None, 1, None, "cpu", args.threads, 3600.0, args.memory_limit_gb, args.echo)
    models = {}
    for entry in entries:
        print(f"training a model of {entry['label']} for one epoch on 20 aspirin frames", flush=True)
        folder = output / "models" / entry["label"].split()[0] / entry.get("settings", "")
        run = train(entry, data, folder, options, pythons)
        if run.error:
            print(f"  {entry['label']}: no model, {run.error.splitlines()[0]}", flush=True)
        else:
            models[entry["label"]] = run.model
    return models


def write_systems(folder: Path, water_sizes: list[int]) -> list[tuple[str, Path, int]]:
    """Write aspirin and the water boxes as extxyz; return (name, file, atoms) by size."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = read_structures(DATASETS["aspirin"].test_file, (), index=0)[0].atoms
    aspirin = ase.Atoms(numbers=frame.numbers, positions=frame.positions)
    systems = [("aspirin", folder / "aspirin.xyz", aspirin)]
    for atoms_count in water_sizes:
        box = water_box(WATER_SIZES[atoms_count])
        systems.append((f"water {atoms_count}", folder / f"water_{atoms_count}.xyz", box))
    for _, path, atoms in systems:
        ase.io.write(path, atoms, format="extxyz")
    return [(name, path, len(atoms)) for name, path, atoms in systems]


def time_calls(entries, models, systems, dtypes, output, pythons, args) -> list[dict]:
    calls = []
    for entry in entries:
        model = models.get(entry["label"])
        for dtype in dtypes:
            failed = None
            for system, path, atoms in systems:
                record = {"package": entry["package"], "label": entry["label"], "dtype": dtype}
                record.update(system=system, atoms=atoms)
                if model is None:
                    record["error"] = "no model"
                elif failed:
                    record["error"] = f"skipped after {failed}"
                else:
                    print(f"timing {entry['label']} {dtype} on {system}", flush=True)
                    record.update(measure(entry, model, path, dtype, output, pythons, args))
                    if record.get("error"):
                        failed = f"{record['error']} on {system}"
                calls.append(record)
    return calls


def measure(entry: dict, model: str, structure: Path, dtype: str, output: Path, pythons: dict, args) -> dict:
    folder = output / "calls"
    name = f"{entry['label'].replace(' ', '_').replace('(', '').replace(')', '')}_{dtype}_{structure.stem}"
    command = [
        pythons[entry["package"]], "-m", "bench.workers.speed",
        "--package", entry["package"],
        "--model", model,
        "--structure", str(structure),
        "--dtype", dtype,
        "--device", args.device,
        "--min-calls", str(args.min_calls),
        "--min-seconds", str(args.min_seconds),
    ]  # fmt: skip
    if args.memory_limit_gb:
        command += ["--memory-limit-gb", f"{args.memory_limit_gb:.3g}"]
    result = run_process(
        command,
        folder / f"{name}.log",
        cwd=folder,
        threads=args.threads,
        timeout=60.0 * args.call_timeout_minutes,
        memory_limit_gb=args.memory_limit_gb,
        echo=args.echo,
    )
    report_line = last_json_line(result, "BENCH_SPEED ")
    out_of_memory = last_json_line(result, "BENCH_OUT_OF_MEMORY ")
    if out_of_memory:
        resident = out_of_memory["peak_rss_mb"] / 1000
        return {"error": f"out of memory at {resident:.1f} GB resident (limit {args.memory_limit_gb:.3g} GB)"}
    if not result.ok or report_line is None:
        return {"error": result.failure(), "log_tail": result.tail(10)}
    report_line["polled_peak_rss_gb"] = round(result.peak_rss_gb, 3)
    return report_line


def measure_throughput(entries, output: Path, pythons: dict, args) -> tuple[list[dict], dict[str, int]]:
    """Train every entry for a few epochs on rMD17 ethanol; return structures per second and frame counts."""
    data = prepare(DATASETS["ethanol"], output / "data" / "ethanol", train_limit=args.throughput_frames, test_limit=1)
    options = TrainOptions(
        budget_seconds=None,
        max_epochs=args.throughput_epochs,
        batch_size=args.throughput_batch_size,
        device=args.device,
        threads=args.threads,
        timeout_seconds=None,
        memory_limit_gb=args.memory_limit_gb,
        echo=args.echo,
    )
    results = []
    for entry in entries:
        print(f"throughput of {entry['label']}: {args.throughput_epochs} epochs on ethanol", flush=True)
        folder = output / "throughput" / entry["label"].split()[0] / entry.get("settings", "")
        run = train(entry, data, folder, options, pythons)
        ends = [point["seconds"] for point in run.curve if point["epoch"] > 0]
        record = {"package": entry["package"], "label": entry["label"]}
        record.update(batch_size=args.throughput_batch_size, epochs=len(ends))
        if run.error or len(ends) < 2:
            record["error"] = run.error or f"only {len(ends)} epoch finished; at least 2 are needed"
        else:
            seconds = statistics.median(b - a for a, b in zip(ends, ends[1:]))
            record.update(
                seconds_per_epoch=seconds,
                structures_per_second=data.counts["train"] / seconds,
                epochs_timed=len(ends) - 1,
            )
        results.append(record)
    return results, data.counts


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    packages = [p.strip() for p in args.packages.split(",") if p.strip()]
    mace_settings = [s.strip() for s in args.mace_settings.split(",") if s.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    water_sizes = [int(size) for size in args.water_sizes.split(",") if size.strip()]
    choices = (
        (packages, PACKAGES, "--packages"),
        (mace_settings, MACE_SETTINGS, "--mace-settings"),
        (dtypes, ("float32", "float64"), "--dtypes"),
        (water_sizes, WATER_SIZES, "--water-sizes"),
    )
    for values, known, option in choices:
        unknown = [value for value in values if value not in known]
        if unknown:
            expected = ", ".join(map(str, known))
            raise SystemExit(f"error: {option}: invalid {unknown}; expected a comma-separated subset of {expected}")
    output = (args.output or default_output("speed")).resolve()
    machine = machine_info(args.threads)
    if args.memory_limit_gb is None and machine["memory_gb"]:
        args.memory_limit_gb = 0.75 * machine["memory_gb"]
    try:
        pythons = {package: python_of(package, peer_venvs_folder(args.peer_venvs)) for package in packages}
    except BenchmarkError as error:
        raise SystemExit(f"error: {error}") from None

    entries = entries_for(packages, mace_settings, parse_overrides(args.mlpot_set))
    results = {
        "kind": "speed",
        "machine": machine,
        "packages": {p: {"version": package_version(p, pythons[p]), **torch_facts(pythons[p])} for p in packages},
        "memory_limit_gb": args.memory_limit_gb,
    }
    models = models_from_accuracy(args.accuracy_results, entries) if args.accuracy_results else {}
    missing = [entry for entry in entries if entry["label"] not in models]
    if missing:
        models.update(brief_models(missing, output, pythons, args))
    results["models"] = models
    systems = write_systems(output / "systems", water_sizes)
    results["calls"] = time_calls(entries, models, systems, dtypes, output, pythons, args)
    write_json(output / "speed.json", results)
    if args.throughput_epochs:
        results["throughput"], results["throughput_frames"] = measure_throughput(entries, output, pythons, args)
        write_json(output / "speed.json", results)

    figures = [plots.plot_cost_per_call(results["calls"], output / "benchmark_cost_per_call.png")]
    if args.accuracy_results:
        accuracy = json.loads(args.accuracy_results.read_text())
        path = output / "benchmark_force_mae_vs_time.png"
        figures.append(plots.plot_force_error_against_time(accuracy["runs"], path))
    if args.figures:
        for figure in figures:
            args.figures.mkdir(parents=True, exist_ok=True)
            (args.figures / figure.name).write_bytes(figure.read_bytes())

    parts = [report.header_markdown(results, "Speed"), "", report.speed_markdown(results)]
    if results.get("throughput"):
        parts += ["", report.throughput_markdown(results)]
    markdown = "\n".join(parts)
    (output / "speed.md").write_text(markdown + "\n")
    print(markdown)
    names = ", ".join(figure.name for figure in figures)
    print(f"\nresults written to {output / 'speed.json'}, {output / 'speed.md'} and figures {names}")
    return output / "speed.json"


if __name__ == "__main__":
    main()
