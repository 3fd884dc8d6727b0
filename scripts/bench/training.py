"""Training runs of mlpot, MACE and SchNetPack on a prepared dataset, with their learning curves.

Every run is one worker process. Its output lines are stamped with their arrival time, and the
per-epoch validation errors that each package prints are parsed into a learning curve whose
``seconds`` count from the start of the process (data loading and statistics included).

Settings of each package:

- mlpot: ``mlpot train`` with the dataset's config from data/configs, the benchmark's data
  files and ``--max-time`` for the budget.
- MACE: ``mace_run_train`` with one of ``MACE_SETTINGS`` (see there), through
  bench.workers.mace_train, which adds the wall-time budget.
- SchNetPack: PaiNN with the settings of SchNetPack's rMD17 config (bench.workers.spk_train).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import yaml

from bench.common import ProcessResult, last_json_line, run_process
from bench.datasets import ENERGY_KEY, FORCES_KEY, Dataset, PreparedDataset

#: MACE hyperparameters by name. "paper" is the rMD17/3BPA/AcAc command of the MACE paper's
#: experiment README (Batatia et al., NeurIPS 2022): ScaleShiftMACE, 256 channels with L=2
#: messages, batch size 5, force weight 1000. The learning rate 0.01 is mace-torch's default,
#: which that command does not set. "small" is the same command with the model size that the
#: mace-torch README recommends as the default for most applications, 128x0e + 128x1o.
MACE_SETTINGS: dict[str, dict[str, str | None]] = {
    "paper": {
        # The experiment README trains "a scale shifted MACE" (ScaleShiftMACE in mace-torch).
        "model": "ScaleShiftMACE",
        "hidden_irreps": "256x0e + 256x1o + 256x2e",
        "max_ell": "3",
        "correlation": "3",
        "num_interactions": "2",
        "r_max": "5.0",
        "num_cutoff_basis": "5",
        "batch_size": "5",
        "lr": "0.01",
        "energy_weight": "1.0",
        "forces_weight": "1000.0",
        "weight_decay": "5e-7",
        "ema": None,
        "ema_decay": "0.99",
        "amsgrad": None,
        "scaling": "rms_forces_scaling",
        "max_num_epochs": "2000",
        "patience": "256",
        "default_dtype": "float32",
    },
}
MACE_SETTINGS["small"] = {**MACE_SETTINGS["paper"], "hidden_irreps": "128x0e + 128x1o"}


@dataclasses.dataclass
class TrainRun:
    """Outcome of one training run. ``error`` is None when a model was written."""

    package: str
    dataset: str
    label: str
    model: str | None
    epochs: int | None
    wall_seconds: float
    curve: list[dict]
    hyperparameters: dict
    log: str
    error: str | None = None


@dataclasses.dataclass
class TrainOptions:
    """Limits and overrides shared by the runners; None keeps each package's own value.

    ``budget_seconds`` limits the training loop; ``timeout_seconds`` stops the whole process.
    """

    budget_seconds: float | None
    max_epochs: int | None
    batch_size: int | None
    device: str
    threads: int | None
    timeout_seconds: float | None
    memory_limit_gb: float | None
    echo: bool = False


def mlpot_label(overrides: dict[str, str]) -> str:
    """Return the label of an mlpot entry: ``mlpot``, or with its overrides, ``mlpot (model=equivariant)``."""
    if not overrides:
        return "mlpot"
    return "mlpot (" + ", ".join(f"{key}={value}" for key, value in overrides.items()) + ")"


def run_mlpot(
    python: str, dataset: Dataset, data: PreparedDataset, folder: Path, options: TrainOptions, overrides: dict[str, str]
) -> TrainRun:
    """Train mlpot with ``mlpot train`` and the dataset's config; return the run."""
    flags = {
        "train_file": str(data.train),
        "valid_file": str(data.valid),
        "test_file": str(data.test),
        "isolated_atoms_file": str(data.isolated_atoms),
        "energy_key": ENERGY_KEY,
        "forces_key": FORCES_KEY,
        "energy_unit": "eV",
        "output": str(folder / "run"),
        "progress_bar": "false",
        "seed": "0",
        "device": {"cpu": "cpu", "cuda": "gpu"}[options.device],
        **dataset.mlpot_overrides,
    }

    if options.budget_seconds:
        flags["max_time"] = f"{options.budget_seconds / 60.0:.6g}"
    else:
        flags["max_time"] = "null"
    if options.max_epochs:
        flags["max_epochs"] = str(options.max_epochs)
    if options.batch_size:
        flags["batch_size"] = str(options.batch_size)
    flags.update(overrides)
    command = [python, "-m", "mlpot.cli.main", "train", str(dataset.mlpot_config)]
    for key, value in flags.items():
        command += ["--" + key.replace("_", "-"), value]

    result = _run(command, folder, options)
    curve = parse_mlpot_curve(result)
    model = folder / "run" / "model.pt"
    hyperparameters = {"config": str(dataset.mlpot_config.relative_to(dataset.mlpot_config.parents[2]))}
    hyperparameters.update(_mlpot_settings(folder / "run" / "config.yaml") or flags)
    return _finish("mlpot", mlpot_label(overrides), data, folder, result, model, curve, hyperparameters)


def run_mace(
    python: str, settings_name: str, data: PreparedDataset, folder: Path, options: TrainOptions
) -> TrainRun:
    """Train MACE with ``mace_run_train`` and the named ``MACE_SETTINGS``; return the run."""
    settings = dict(MACE_SETTINGS[settings_name])
    if options.max_epochs:
        settings["max_num_epochs"] = str(options.max_epochs)
    if options.batch_size:
        settings["batch_size"] = str(options.batch_size)

    e0s = "{" + ", ".join(f"{z}: {energy!r}" for z, energy in sorted(data.e0.items())) + "}"
    arguments = {
        "name": data.name,
        "train_file": str(data.train),
        "valid_file": str(data.valid),
        "energy_key": ENERGY_KEY,
        "forces_key": FORCES_KEY,
        "E0s": e0s,
        **settings,
        "valid_batch_size": "10",
        "device": options.device,
        "seed": "0",
        "error_table": "TotalMAE",
        # The benchmark scores the test set itself; this skips MACE's train and validation tables.
        "skip_evaluate_heads": "Default",
    }

    command = [python, "-m", "bench.workers.mace_train"]
    if options.budget_seconds:
        command += ["--budget-seconds", f"{options.budget_seconds:.1f}"]
    command.append("--")
    for key, value in arguments.items():
        command.append(f"--{key}" if value is None else f"--{key}={value}")

    result = _run(command, folder, options)
    curve = parse_mace_curve(result)
    hyperparameters = {"settings": settings_name, **{k: ("true" if v is None else v) for k, v in settings.items()}}
    model = folder / f"{data.name}.model"
    return _finish("mace", f"mace ({settings_name})", data, folder, result, model, curve, hyperparameters)


def run_schnetpack(python: str, data: PreparedDataset, folder: Path, options: TrainOptions) -> TrainRun:
    """Train SchNetPack's PaiNN with its rMD17 settings; return the run."""
    command = [
        python, "-m", "bench.workers.spk_train",
        "--train", str(data.train),
        "--valid", str(data.valid),
        "--output", str(folder),
        "--device", options.device,
    ]  # fmt: skip
    if options.budget_seconds:
        command += ["--budget-seconds", f"{options.budget_seconds:.1f}"]
    if options.max_epochs:
        command += ["--max-epochs", str(options.max_epochs)]
    if options.batch_size:
        command += ["--batch-size", str(options.batch_size)]
    result = _run(command, folder, options)
    curve = []
    for seconds, entry in _json_lines(result, "BENCH_EPOCH "):
        errors = {key: value for key, value in entry.items() if key.endswith(("_meV", "_per_A"))}
        curve.append({"epoch": entry["epoch"], "seconds": seconds, **errors})
    hyperparameters = last_json_line(result, "BENCH_HYPERPARAMETERS ") or {}
    outcome = last_json_line(result, "BENCH_RESULT ")
    model = Path(outcome["model"]) if outcome else folder / "best_model"
    return _finish("schnetpack", "schnetpack (PaiNN)", data, folder, result, model, curve, hyperparameters)


def _mlpot_settings(path: Path) -> dict | None:
    """Return the model section and the optimisation keys of the config that a run folder stores."""
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text())
    training_keys = ("max_epochs", "max_time", "learning_rate", "energy_weight", "forces_weight", "ema_decay", "seed")
    settings = dict(config["model"])
    # Keys of the parts that the run does not use would only clutter the report.
    unused = ["dipole_features", "dipole_lmax", "dipole_layers"] if not settings.get("dipole") else []
    if settings.get("model") == "invariant":
        unused += ["equivariant_features", "equivariant_layers", "correlation"]
    for key in unused:
        settings.pop(key, None)
    settings["batch_size"] = config["data"]["batch_size"]
    settings.update({key: config["training"][key] for key in training_keys})
    return settings


def parse_mlpot_curve(result: ProcessResult) -> list[dict]:
    """Parse the per-epoch table of ``mlpot train`` into curve points.

    The table has a header row (``epoch | lr | ... | F MAE meV/Å | time s``) and one row per
    epoch, with cells separated by ``|``.
    """
    columns: list[str] | None = None
    curve = []
    for seconds, line in result.lines:
        cells = [cell.strip() for cell in line.split("|")]
        if cells and cells[0] == "epoch":
            columns = cells
            continue
        if columns is None or len(cells) != len(columns) or not cells[0].isdigit():
            continue
        row = dict(zip(columns, cells))
        point = {"epoch": int(row["epoch"]) + 1, "seconds": seconds}
        if "F MAE meV/Å" in row:
            point["forces_mae_meV_per_A"] = float(row["F MAE meV/Å"])
        if "E MAE meV/atom" in row:
            point["energy_per_atom_mae_meV"] = float(row["E MAE meV/atom"])
        curve.append(point)
    return curve


MACE_EPOCH = re.compile(r"(Initial|Epoch (\d+)): head: \S+, loss=\S+, MAE_E=\s*([\d.]+) meV, MAE_F=\s*([\d.]+) meV / A")


def parse_mace_curve(result: ProcessResult) -> list[dict]:
    """Parse MACE's ``Initial:`` and ``Epoch N:`` validation lines (error table TotalMAE)."""
    curve = []
    for seconds, line in result.lines:
        match = MACE_EPOCH.search(line)
        if match:
            epoch = 0 if match.group(1) == "Initial" else int(match.group(2)) + 1
            curve.append(
                {
                    "epoch": epoch,
                    "seconds": seconds,
                    "energy_mae_meV": float(match.group(3)),
                    "forces_mae_meV_per_A": float(match.group(4)),
                }
            )
    return curve


def _json_lines(result: ProcessResult, prefix: str) -> list[tuple[float, dict]]:
    return [(seconds, json.loads(line[len(prefix) :])) for seconds, line in result.lines if line.startswith(prefix)]


def _run(command: list[str], folder: Path, options: TrainOptions) -> ProcessResult:
    folder.mkdir(parents=True, exist_ok=True)
    return run_process(
        command,
        folder / "train.log",
        cwd=folder,
        threads=options.threads,
        timeout=options.timeout_seconds,
        memory_limit_gb=options.memory_limit_gb,
        echo=options.echo,
    )


def _finish(
    package: str,
    label: str,
    data: PreparedDataset,
    folder: Path,
    result: ProcessResult,
    model: Path,
    curve: list[dict],
    hyperparameters: dict,
) -> TrainRun:
    error = None
    no_epoch = [line for _, line in result.lines if line.startswith("BENCH_NO_EPOCH ")]
    if no_epoch:
        error = no_epoch[-1].removeprefix("BENCH_NO_EPOCH ")
    elif not result.ok:
        error = f"training {result.failure()}; last output:\n{result.tail(15)}"
    elif not model.is_file():
        error = f"training ended without writing {model}; last output:\n{result.tail(15)}"
    trained_epochs = [point["epoch"] for point in curve if point["epoch"] > 0]
    return TrainRun(
        package=package,
        dataset=data.name,
        label=label,
        model=str(model) if model.is_file() else None,
        epochs=max(trained_epochs) if trained_epochs else 0,
        wall_seconds=result.seconds,
        curve=curve,
        hyperparameters=hyperparameters,
        log=str(folder / "train.log"),
        error=error,
    )
