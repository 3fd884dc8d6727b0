"""Markdown tables of the accuracy, speed and training-throughput results."""

from __future__ import annotations

from bench.common import markdown_table


def header_markdown(results: dict, title: str) -> str:
    """Title, command, machine, date and the version of each package and of its torch."""
    machine = results["machine"]
    lines = [
        f"## {title}",
        "",
        f"- command: `{machine['command']}`",
        f"- machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, {machine['memory_gb']} GB memory; "
        f"{machine['platform']}, Python {machine['python']}",
        f"- date: {machine['date']}",
    ]
    packages = results.get("packages", {})
    if packages:
        versions = ", ".join(
            f"{name} {facts['version']} (torch {facts['torch']}, {facts['threads']} threads by default)"
            for name, facts in packages.items()
        )
        lines.append(f"- packages: {versions}")
    if machine.get("threads_requested"):
        lines.append(f"- torch threads set to {machine['threads_requested']} in every worker")
    return "\n".join(lines)


def run_summary(record: dict) -> str:
    """Format one line about a finished training run, for the console."""
    if record.get("error"):
        return f"  {record['label']} on {record['dataset']}: FAILED: {record['error']}"
    test = record.get("test", {})
    return (
        f"  {record['label']} on {record['dataset']}: {record['epochs']} epochs "
        f"in {record['wall_seconds'] / 60:.1f} min; "
        f"test E MAE {test.get('energy_mae_meV', float('nan')):.1f} meV, "
        f"F MAE {test.get('forces_mae_meV_per_A', float('nan')):.1f} meV/Å"
    )


def accuracy_markdown(results: dict, header: bool = True) -> str:
    """Test errors of every run, then the hyperparameters of each package; ``header`` adds the machine header."""
    rows = []
    failures = []

    for record in results["runs"]:
        test = record.get("test") or {}
        if record.get("error"):
            failures.append(f"- {record['label']} on {record['dataset']}: {record['error'].splitlines()[0]}")
            epochs = str(record.get("epochs") or 0)
            rows.append([record["dataset"], record["label"], epochs, "failed", "", "", "", "", ""])
            continue
        rows.append(
            [
                record["dataset"],
                record["label"],
                str(record["epochs"]),
                f"{record['wall_seconds'] / 60:.1f}",
                f"{test['energy_mae_meV']:.1f}",
                f"{test['energy_rmse_meV']:.1f}",
                f"{test['energy_per_atom_mae_meV']:.2f}",
                f"{test['forces_mae_meV_per_A']:.1f}",
                f"{test['forces_rmse_meV_per_A']:.1f}",
            ]
        )

    headers = [
        "dataset",
        "package",
        "epochs",
        "process min",
        "E MAE meV",
        "E RMSE meV",
        "E MAE meV/atom",
        "F MAE meV/Å",
        "F RMSE meV/Å",
    ]
    counts = ", ".join(
        f"{name} {info['counts']['train']}/{info['counts']['valid']}/{info['counts']['test']}"
        for name, info in results["datasets"].items()
    )
    parts = [header_markdown(results, f"Accuracy ({results['mode']}, device {results['device']})"), ""] if header else []
    parts += [
        f"Frames (train/validation/test): {counts}. Errors on the test frames, computed by the benchmark "
        "from each package's predictions in its training dtype (float32). \"process min\" is the wall "
        "time of the training process, start-up, data loading and model saving included.",
        "",
        markdown_table(headers, rows, "llrrrrrrr"),
    ]
    if failures:
        parts += ["", "Failed runs:", *failures]

    parts += ["", "Hyperparameters:", ""]
    # Runs of one package with the same settings share a line that names their datasets.
    groups: dict[tuple[str, str], list[str]] = {}
    for record in results["runs"]:
        settings = ", ".join(f"{key} {value}" for key, value in record["hyperparameters"].items())
        groups.setdefault((record["label"], settings), []).append(record["dataset"])
    for (label, settings), datasets in groups.items():
        parts.append(f"- {label} ({', '.join(datasets)}): {settings}")
    return "\n".join(parts)


def speed_markdown(results: dict) -> str:
    """Cost of one energy+forces call for every system, package and dtype."""
    rows = []
    for entry in results["calls"]:
        if entry.get("error"):
            failed = [entry["system"], str(entry["atoms"]), entry["label"], entry["dtype"], "failed", "", ""]
            rows.append(failed + [entry["error"]])
            continue
        rows.append(
            [
                entry["system"],
                str(entry["atoms"]),
                entry["label"],
                entry["dtype"],
                f"{entry['median_ms']:.4g}",
                f"{entry['us_per_atom']:.4g}",
                f"{entry['peak_rss_mb']:.0f}",
                f"{entry['calls']} calls, first {entry['first_call_ms']:.4g} ms, threads {entry['torch_threads']}",
            ]
        )
    headers = ["system", "atoms", "package", "dtype", "ms/call", "µs/atom", "peak RSS MB", "notes"]
    return "\n".join(
        [
            "Energy and forces through each package's ASE calculator: median over the timed calls, atoms moved "
            "by 0.001 Å before every call; peak RSS is the max resident memory of the measuring process "
            "(torch, model and structure included).",
            "",
            markdown_table(headers, rows, "lrllrrrl"),
        ]
    )


def throughput_markdown(results: dict) -> str:
    """Training throughput on rMD17 ethanol."""
    rows = []
    for entry in results["throughput"]:
        if entry.get("error"):
            reason = entry["error"].splitlines()[0]
            rows.append([entry["label"], str(entry.get("batch_size", "")), "failed", "", reason])
            continue
        rows.append(
            [
                entry["label"],
                str(entry["batch_size"]),
                f"{entry['structures_per_second']:.1f}",
                f"{entry['seconds_per_epoch']:.1f}",
                f"{entry['epochs_timed']} epochs timed of {entry['epochs']}",
            ]
        )
    headers = ["package", "batch size", "structures/s", "s/epoch", "notes"]
    return "\n".join(
        [
            f"Training throughput on rMD17 ethanol ({results['throughput_frames']['train']} training frames): "
            "median time between the ends of consecutive epochs, after the first, each including the "
            f"validation of the {results['throughput_frames']['valid']} validation frames.",
            "",
            markdown_table(headers, rows, "lrrrl"),
        ]
    )


def targets_markdown(runs: list[dict], calls: list[dict], throughput: list[dict], mlpot_label: str = "mlpot") -> str:
    """Compare ``mlpot_label`` with the peers on the targets of the benchmark, as ratios.

    The call time must be at most 0.5 times the fastest peer's, on aspirin and on 1,536 water
    atoms. The cost per atom must stay within 1.3 times from 1,536 to 12,288 atoms, with memory
    growing linearly. Against MACE, the force MAE on rMD17 ethanol must be at most 0.7 times
    MACE's and the training throughput at least 2 times MACE's.
    """
    rows = []

    def call_time(label: str, system: str, dtype: str) -> float | None:
        for entry in calls:
            if entry["label"] == label and entry["system"] == system and entry["dtype"] == dtype and not entry.get("error"):
                return entry["median_ms"]
        return None

    peers = sorted({entry["label"] for entry in calls if entry["package"] != "mlpot"})
    for system in ("aspirin", "water 1536"):
        for dtype in ("float32", "float64"):
            ours = call_time(mlpot_label, system, dtype)
            timed = [(call_time(peer, system, dtype), peer) for peer in peers]
            timed = [(ms, peer) for ms, peer in timed if ms is not None]
            if ours is None or not timed:
                continue
            fastest, peer = min(timed)
            ratio = ours / fastest
            measured = f"{ours:.4g} ms against {fastest:.4g} ms ({peer}): {ratio:.2f}"
            rows.append([f"call time, {system}, {dtype}", "≤ 0.5", measured, "met" if ratio <= 0.5 else "missed"])

    for dtype in ("float32", "float64"):
        small, large = call_time(mlpot_label, "water 1536", dtype), call_time(mlpot_label, "water 12288", dtype)
        if small is not None and large is not None:
            ratio = (large / 12288) / (small / 1536)
            measured = f"{1000 * small / 1536:.0f} and {1000 * large / 12288:.0f} µs/atom: {ratio:.2f}"
            rows.append([f"cost per atom, 12,288 over 1,536 water atoms, {dtype}", "≤ 1.3", measured, "met" if ratio <= 1.3 else "missed"])

    for dtype in ("float32", "float64"):
        found = {}
        for entry in calls:
            if entry["label"] == mlpot_label and entry["dtype"] == dtype and not entry.get("error"):
                found[entry["system"]] = entry["peak_rss_mb"] - entry["baseline_rss_mb"]
        if "water 1536" in found and "water 12288" in found:
            ratio = found["water 12288"] / found["water 1536"] / 8.0
            measured = f"{found['water 1536']:.0f} and {found['water 12288']:.0f} MB above start-up: {ratio:.2f}"
            rows.append([f"memory growth per atom, 12,288 over 1,536 water atoms, {dtype}", "about 1 (linear)", measured, ""])

    def force_mae(label_prefix: str) -> float | None:
        for run in runs:
            if run["dataset"] == "ethanol" and run["label"].startswith(label_prefix) and run.get("test"):
                return run["test"]["forces_mae_meV_per_A"]
        return None

    ours, mace = force_mae(mlpot_label), force_mae("mace")
    if ours is not None and mace is not None:
        ratio = ours / mace
        measured = f"{ours:.1f} against {mace:.1f} meV/Å: {ratio:.2f}"
        rows.append(["force MAE, rMD17 ethanol, fixed budget", "≤ 0.7 × MACE", measured, "met" if ratio <= 0.7 else "missed"])

    rates = {entry["label"]: entry.get("structures_per_second") for entry in throughput}
    mace_rates = [rate for label, rate in rates.items() if label.startswith("mace") and rate]
    if rates.get(mlpot_label) and mace_rates:
        ratio = rates[mlpot_label] / max(mace_rates)
        measured = f"{rates[mlpot_label]:.0f} against {max(mace_rates):.1f} structures/s: {ratio:.1f}"
        rows.append(["training throughput, rMD17 ethanol", "≥ 2 × MACE", measured, "met" if ratio >= 2 else "missed"])

    headers = ["target", "required ratio", "measured", "result"]
    return markdown_table(headers, rows, "llll")
