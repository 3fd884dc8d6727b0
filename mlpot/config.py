"""Configuration of a training run: typed dataclasses, YAML files and command-line overrides.

A config file has three sections, ``data``, ``model`` and ``training``, whose keys are the fields
below. Every key name is unique across the sections, so each one is also a command-line flag:
``num_features`` in ``model`` is ``--num-features``. Each field's metadata contains its help text and
unit; docs/config.md is generated from it (``python -m mlpot.config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlpot.errors import ConfigError

#: Prefix of data paths that name a dataset shipped with mlpot, such as
#: ``bundled:acetylacetone/train_300K.xyz``.
BUNDLED_PREFIX = "bundled:"


def option(default: Any, help: str, unit: str = "", choices: tuple = ()) -> Any:
    """Declare a config field with its default, help text, unit and allowed values."""
    metadata = {"help": help, "unit": unit, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    """Sources of the structures, and the names and units of their labels."""

    train_file: str | None = option(
        None,
        "Training structures: any file ASE reads (extxyz, ASE database, ...) or an rMD17-style npz. "
        "'bundled:NAME' names a dataset shipped with mlpot.",
    )
    valid_file: str | None = option(None, "Validation structures; when empty, valid_fraction of the training file.")
    valid_fraction: float = option(0.1, "Share of the training file held out for validation when valid_file is empty.")
    test_file: str | None = option(None, "Test structures, evaluated with the final model after training.")
    isolated_atoms_file: str | None = option(
        None,
        "One-atom structures whose energies become the per-element reference energies; when empty, "
        "the references are a least-squares fit on the training split.",
    )
    isolated_atoms_energy_unit: str | None = option(
        None,
        "Unit of the energies in isolated_atoms_file, which is read on its own: energy_unit does not apply "
        "to it. Empty means eV for files ASE reads.",
    )
    isolated_atoms_energy_key: str | None = option(
        None, "Name of the energy label in isolated_atoms_file; empty means the same name as energy_key."
    )
    labels: list[str] = option(
        ["energy", "forces"], "Labels to train on: any of energy, forces, stress, dipole.", choices=("energy", "forces", "stress", "dipole")
    )
    energy_key: str = option("energy", "Name of the energy label in atoms.info or the calculator results.")
    forces_key: str = option("forces", "Name of the per-atom forces array.")
    stress_key: str = option("stress", "Name of the stress label (6 Voigt or 9 components).")
    dipole_key: str = option("dipole", "Name of the dipole label (3 components).")
    charge_key: str = option("charge", "Name of the total-charge entry; structures without it are neutral.")
    energy_unit: str | None = option(
        None, "Unit of the energies in the files (eV, meV, Hartree, kcal/mol, kJ/mol); empty means eV for files ASE reads."
    )
    length_unit: str | None = option(None, "Unit of positions and cells (Å, Bohr, nm); empty means Å.")
    forces_unit: str | None = option(
        None, "Unit of the forces (eV/Å, Hartree/Bohr, kcal/mol/Å); empty means energy_unit per length_unit."
    )
    stress_unit: str | None = option(
        None, "Unit of the stress (eV/Å^3, GPa, kbar); empty means energy_unit per length_unit cubed."
    )
    dipole_unit: str | None = option(None, "Unit of the dipoles (e·Å, e*Bohr, Debye); empty means e·Å.")
    batch_size: int = option(8, "Structures per training batch.")
    eval_batch_size: int = option(32, "Structures per validation, test and prediction batch.")
    num_workers: int = option(0, "Data-loader worker processes; 0 loads batches in the main process.")


@dataclass
class ModelConfig:
    """Architecture and sizes of the model."""

    model: str = option(
        "invariant",
        "Energy network: invariant (message passing on distances and angles) or equivariant "
        "(E(3)-equivariant message passing on scalar, vector and tensor features).",
        choices=("invariant", "equivariant"),
    )
    cutoff: float = option(5.0, "Cutoff radius of the neighbour list.", unit="Å")
    num_features: int = option(64, "Features per atom of the invariant model.")
    num_radial: int = option(8, "Bessel radial basis functions.")
    radial_hidden: int = option(64, "Width of the radial network that turns the basis into filters.")
    num_interactions: int = option(3, "Interaction (message-passing) blocks of the invariant model.")
    lmax: int = option(
        2,
        "Highest angular degree: of the three-body terms (invariant model; 0 leaves only distances) or of "
        "the node features and edge spherical harmonics (equivariant model; cost grows steeply above 2).",
    )
    equivariant_features: int = option(
        32, "Channels of each irrep (0e, 1o, 2e, ... up to lmax) in the node features of the equivariant model."
    )
    equivariant_layers: int = option(2, "Interaction (message-passing) blocks of the equivariant model.")
    correlation: int = option(
        3,
        "Highest order of the products of each atom's neighbour density with itself in the equivariant "
        "model; each block then reaches body order correlation + 1. 1 leaves no products.",
    )
    envelope_exponent: int = option(5, "Exponent p of the polynomial cutoff envelope.")
    dtype: str = option("float32", "Floating-point type of the model's weights and arithmetic.", choices=("float32", "float64"))
    dipole: bool = option(False, "Add the E(3)-equivariant dipole head (atomic charges and atomic dipoles).")
    dipole_features: int = option(16, "Channels of each irrep (0e, 1o, 1e) in the dipole head.")
    dipole_lmax: int = option(2, "Highest degree of the edge spherical harmonics in the dipole head.")
    dipole_layers: int = option(2, "Equivariant message-passing layers in the dipole head.")


@dataclass
class TrainingConfig:
    """Optimisation, run length, devices and output."""

    output: str | None = option(None, "Run folder for checkpoints, logs and model.pt; empty means runs/<date-time>.")
    max_epochs: int = option(200, "Maximum number of epochs.")
    max_time: float | None = option(None, "Wall-time limit of the training; empty means none.", unit="minutes")
    seed: int = option(0, "Seed of the weights, the validation split and the batch order.")
    device: str = option("auto", "Accelerator: cpu, gpu or auto.", choices=("cpu", "gpu", "auto"))
    devices: int = option(1, "Processes (CPU) or GPUs per node; more than 1 trains with Lightning's DDP.")
    num_nodes: int = option(1, "Nodes for multi-node DDP.")
    threads: int | None = option(
        None,
        "torch CPU threads of each training process; empty keeps torch's default (all cores). 1 is often "
        "faster for small molecules, and avoids oversubscription when other jobs share the cores.",
    )
    deterministic: bool = option(
        False,
        "Make Lightning call torch.use_deterministic_algorithms(True), for GPU runs that repeat bitwise with "
        "one seed. CPU runs repeat without it. On GPU the deterministic index_add and index_put kernels of the "
        "neighbour sums are slower, and an operation without a deterministic kernel raises an error.",
    )
    learning_rate: float = option(5e-3, "Peak learning rate of the AdamW optimiser, which uses the AMSGrad variant.")
    weight_decay: float = option(0.0, "Decoupled weight decay (AdamW).")
    warmup_epochs: float = option(
        1.0,
        "Epochs of linear learning-rate warm-up: over its n steps, step k (from 0) uses learning_rate·(k+1)/n, "
        "so the rate starts at learning_rate/n. 0 disables the warm-up.",
    )
    lr_factor: float = option(0.8, "Factor applied to the learning rate when the validation loss stops improving.")
    lr_patience: int = option(10, "Epochs without improvement before the learning rate drops.")
    min_lr: float = option(1e-6, "Lower bound of the learning rate.")
    early_stopping_patience: int = option(60, "Epochs without improvement of the validation loss before training stops.")
    gradient_clip: float = option(10.0, "Maximum norm of the gradient; 0 disables clipping.")
    ema_decay: float = option(0.99, "Decay of the exponential moving average of the weights; 0 disables it.")
    energy_weight: float = option(1.0, "Loss weight of the squared energy-per-atom error (eV/atom)².")
    forces_weight: float = option(10.0, "Loss weight of the squared force-component error (eV/Å)².")
    stress_weight: float = option(1.0, "Loss weight of the squared stress-component error (eV/Å³)².")
    dipole_weight: float = option(10.0, "Loss weight of the squared dipole-component error (e·Å)².")
    init_from: str | None = option(
        None, "Model file whose weights start this training (fine-tuning); its optimiser state is not used."
    )
    log_every_n_steps: int = option(10, "Training steps between logged losses.")
    progress_bar: bool | None = option(
        None, "Show a progress bar during epochs; empty means only when standard output is a terminal."
    )


@dataclass
class Config:
    """A whole training configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        """Return the config as plain dicts, as written to YAML and model files."""
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}


def fields_by_key() -> dict[str, tuple[str, dataclasses.Field]]:
    """Map every config key to its section name and dataclass field."""
    found: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for item in dataclasses.fields(cls):
            if item.name in found:
                raise RuntimeError(f"config key {item.name!r} appears in two sections")
            found[item.name] = (section, item)
    return found


def _type_of(section: str, name: str):
    return typing.get_type_hints(SECTIONS[section])[name]


def convert_value(section: str, name: str, value: Any) -> Any:
    """Check ``value`` against the type of ``section.name`` and convert strings from the command line.

    Raises :class:`~mlpot.errors.ConfigError` naming the key, the value and the expected type.
    """
    expected = _type_of(section, name)
    options = typing.get_args(expected)
    optional = type(None) in options
    base = next((t for t in options if t is not type(None)), expected) if optional else expected

    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "") and optional):
        if optional:
            return None
        raise ConfigError(f"config key {section}.{name} must not be empty")

    origin = typing.get_origin(base)
    try:
        if origin is list:
            if isinstance(value, str):
                value = [item.strip() for item in value.split(",") if item.strip()]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            converted: Any = [str(item) for item in value]
        elif base is bool:
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                converted = True
            elif isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                converted = False
            elif isinstance(value, bool):
                converted = value
            else:
                raise TypeError
        elif base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            converted = int(value)
        elif base is float:
            if isinstance(value, bool):
                raise TypeError
            converted = float(value)
        else:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            converted = str(value)
    except (TypeError, ValueError):
        type_name = getattr(base, "__name__", str(base))
        raise ConfigError(
            f"config key {section}.{name} expects {type_name}{' or empty' if optional else ''}, got {value!r}"
        ) from None

    choices = SECTIONS[section].__dataclass_fields__[name].metadata.get("choices", ())
    items = converted if isinstance(converted, list) else [converted]
    for item in items:
        if choices and item not in choices:
            raise ConfigError(f"config key {section}.{name} got {item!r}; expected one of {', '.join(map(str, choices))}")
    return converted


def _unknown_key_error(where: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def config_from_dict(values: dict, where: str = "config") -> Config:
    """Build a :class:`Config` from nested dicts, checking every key and value."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping with sections {', '.join(SECTIONS)}, got {type(values).__name__}")
    config = Config()
    all_keys = fields_by_key()
    for section, entries in values.items():
        if section not in SECTIONS:
            if section in all_keys:
                raise ConfigError(
                    f"{where}: key {section!r} belongs in the {all_keys[section][0]!r} section, not at the top level"
                )
            raise _unknown_key_error(where, section, list(SECTIONS))
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of keys to values")
        target = getattr(config, section)
        names = [item.name for item in dataclasses.fields(target)]
        for name, value in entries.items():
            if name not in names:
                if name in all_keys:
                    raise ConfigError(f"{where}: key {name!r} belongs in the {all_keys[name][0]!r} section, not {section!r}")
                raise _unknown_key_error(f"{where}, section {section!r}", name, names)
            try:
                setattr(target, name, convert_value(section, name, value))
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
    return config


def load_config(path: str | Path) -> Config:
    """Read a YAML config file. Raises ConfigError for a missing file, bad YAML, or a bad key or value."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    return config_from_dict(values, where=str(path))


def set_key(config: Config, key: str, value: Any) -> None:
    """Set one config key, wherever its section is, from a command-line string or a Python value."""
    all_keys = fields_by_key()
    if key not in all_keys:
        raise _unknown_key_error("command line", key, list(all_keys))
    section, _ = all_keys[key]
    setattr(getattr(config, section), key, convert_value(section, key, value))


def resolve_data_path(path: str) -> Path:
    """Return the file a data path names; ``bundled:NAME`` is looked up among mlpot's datasets."""
    if path.startswith(BUNDLED_PREFIX):
        from importlib import resources

        name = path[len(BUNDLED_PREFIX) :]
        resolved = Path(str(resources.files("mlpot.bundled").joinpath(name)))
        if not resolved.is_file():
            raise ConfigError(f"{path}: no bundled dataset of that name; see the data/ folder of mlpot for the list")
        return resolved
    return Path(path).expanduser()


def reference_markdown() -> str:
    """Render every config key with its default, unit and help as a Markdown reference."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `mlpot/config.py` by `python -m mlpot.config > docs/config.md`; a test fails when",
        "this page and the code differ. Every key can be set in the YAML section shown, or on the",
        "command line as `--key-name VALUE` (underscores become dashes). Empty values are written",
        "`null` in YAML and `none` on the command line.",
    ]
    for section, cls in SECTIONS.items():
        lines += ["", f"## {section}", "", (cls.__doc__ or "").strip(), "", "| key | default | unit | meaning |", "|---|---|---|---|"]
        defaults = cls()
        for item in dataclasses.fields(cls):
            default = getattr(defaults, item.name)
            if default is None:
                shown = "null"
            elif isinstance(default, list):
                shown = ", ".join(default)
            else:
                shown = default
            meaning = item.metadata["help"]
            if item.metadata.get("choices"):
                meaning += f" Choices: {', '.join(map(str, item.metadata['choices']))}."
            lines.append(f"| `{item.name}` | `{shown}` | {item.metadata.get('unit', '')} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
