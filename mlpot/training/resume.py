"""Continuing from earlier runs: the checks of ``--resume`` and the weights of ``init_from``.

A resumed run must train the model of its checkpoints on the data of its first start, so only
keys that set how long and on what hardware it goes on may change (:data:`RESUME_KEYS`). A run
that starts from the weights of a model file (``init_from``) must build the same architecture
with the same cutoff.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import yaml

from mlpot.config import Config, ModelConfig, config_from_dict, fields_by_key
from mlpot.errors import ConfigError, ModelFileError
from mlpot.models.io import load_model
from mlpot.models.potential import Potential
from mlpot.training.callbacks import load_checkpoint

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
MODEL_NAME = "model.pt"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"

#: Keys that may differ from a run's config.yaml when it is resumed. They set the length of the
#: run, the hardware and the output, and leave the model, the data, the batches and the optimiser
#: as they were. ``output`` is ignored on resume, since the run folder is the one resumed.
RESUME_KEYS = (
    "max_epochs",
    "max_time",
    "early_stopping_patience",
    "device",
    "devices",
    "num_nodes",
    "threads",
    "deterministic",
    "progress_bar",
    "log_every_n_steps",
    "num_workers",
    "eval_batch_size",
    "output",
)

#: Model keys that may differ between an ``init_from`` model file and the config: the weights
#: are converted to the config's dtype when they are copied.
INIT_FROM_FREE_KEYS = ("dtype",)


def load_run_config(folder: Path) -> Config:
    """Read the config a run folder was started with, for ``--resume``."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"cannot resume from {folder}: {CONFIG_NAME} not found there; is it an mlpot run folder?")
    return config_from_dict(yaml.safe_load(path.read_text()), where=str(path))


def changed_keys(before: Config, after: Config) -> dict[str, tuple[Any, Any]]:
    """Map each key whose value differs between two configs to its (before, after) values."""
    changes = {}
    for key, (section, _) in fields_by_key().items():
        old, new = getattr(getattr(before, section), key), getattr(getattr(after, section), key)
        if old != new:
            changes[key] = (old, new)
    return changes


def check_resume_config(folder: Path, config: Config) -> None:
    """Raise ConfigError when ``config`` changes a key of the run in ``folder`` that --resume must keep.

    The message names each such key with both values, and how to train with the new values.
    """
    stored = load_run_config(folder)
    rejected = {key: values for key, values in changed_keys(stored, config).items() if key not in RESUME_KEYS}
    if not rejected:
        return
    changes = ", ".join(f"{key} ({old!r} in {CONFIG_NAME}, {new!r} now)" for key, (old, new) in rejected.items())
    model = folder / MODEL_NAME
    if model.is_file():
        alternative = f"start a new run from its weights instead: mlpot train CONFIG --init-from {model} --output NEW_FOLDER"
    else:
        alternative = (
            f"finish this run first (mlpot train --resume {folder}), then start a new run from its weights "
            f"with --init-from {model} --output NEW_FOLDER"
        )
    raise ConfigError(
        f"cannot resume {folder} with other values of {changes}: they change the model, the data or the "
        f"optimisation that the checkpoints of the run belong to. To train with the new values, {alternative}. "
        f"--resume accepts changes of {', '.join(key for key in RESUME_KEYS if key != 'output')} only"
    )


def check_resume_checkpoint(folder: Path, checkpoint: Path) -> dict[str, Any]:
    """Load ``checkpoint`` and return it, so that a damaged one fails before the data is read."""
    try:
        return load_checkpoint(checkpoint)
    except ModelFileError as error:
        raise ModelFileError(
            f"cannot resume from {folder}: {error}. To go on from the best epoch instead, copy "
            f"{CHECKPOINTS}/{BEST_CHECKPOINT} to {CHECKPOINTS}/{LAST_CHECKPOINT}; to start the run again, delete "
            f"{CHECKPOINTS}/{LAST_CHECKPOINT}"
        ) from None


def remove_partial_files(folder: Path) -> None:
    """Delete the temporary files of atomic writes that a killed run left in ``folder``."""
    for directory in (folder, folder / CHECKPOINTS):
        for path in directory.glob(".*.tmp"):
            logger.info("removing %s, a partial file of the interrupted run", path)
            path.unlink(missing_ok=True)


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Return the number of epochs a checkpoint of mlpot comprises.

    mlpot writes checkpoints at the end of an epoch only, and Lightning stores the 0-based index
    of that epoch, the number that the metric table shows.
    """
    return int(checkpoint["epoch"]) + 1


def nothing_left_reason(checkpoint: dict[str, Any], config: Config) -> str | None:
    """Return why a run resumed from ``checkpoint`` would stop at once, or None when it would train.

    Two limits count: ``max_epochs`` reached, and early stopping, whose count of epochs without
    improvement is stored in the checkpoint.
    """
    done = epochs_done(checkpoint)
    training = config.training
    if done >= training.max_epochs:
        return (
            f"it has trained {done} epochs, and max_epochs is {training.max_epochs}; pass a larger --max-epochs "
            "to train on"
        )
    for name, state in checkpoint.get("callbacks", {}).items():
        if name.startswith("EarlyStopping") and int(state.get("wait_count", 0)) >= training.early_stopping_patience:
            return (
                f"early stopping ended it after {state['wait_count']} epochs without improvement of the validation "
                f"loss (early_stopping_patience {training.early_stopping_patience}); pass a larger "
                "--early-stopping-patience to train on"
            )
    return None


def load_initial_weights(potential: Potential, path: Path) -> None:
    """Copy the weights of the model file ``path`` into ``potential`` for fine-tuning.

    Raises:
        ConfigError: the model file has other elements, another cutoff, or an architecture whose
            weights do not fit ``potential``. The message names the differing model keys.
    """
    source = load_model(path)
    if source.elements != potential.elements:
        raise ConfigError(
            f"init_from {path}: its elements {source.elements} differ from those of the training data {potential.elements}"
        )
    differences = _model_differences(source.config, potential.config)
    if "cutoff" in differences:
        raise ConfigError(_architecture_message(path, differences))
    try:
        potential.load_state_dict(source.state_dict())
    except RuntimeError as error:
        if not differences:
            raise ConfigError(f"init_from {path}: its weights do not fit this config's model ({error})") from None
        raise ConfigError(_architecture_message(path, differences)) from None
    logger.info("initial weights from %s", path)


def _model_differences(source: ModelConfig, target: ModelConfig) -> dict[str, tuple[Any, Any]]:
    source_values, target_values = dataclasses.asdict(source), dataclasses.asdict(target)
    return {
        key: (source_values[key], target_values[key])
        for key in source_values
        if key not in INIT_FROM_FREE_KEYS and source_values[key] != target_values[key]
    }


def _architecture_message(path: Path, differences: dict[str, tuple[Any, Any]]) -> str:
    """Return the error for a model file whose model keys differ from the config's."""
    in_file = ", ".join(f"{key} {old}" for key, (old, _) in differences.items())
    in_config = ", ".join(str(new) for _, new in differences.values())
    return (
        f"init_from {path}: the model file has {in_file}; this config has {in_config}. Set these keys of the "
        "model section to the values of the model file, or leave init_from empty to train from random weights"
    )
