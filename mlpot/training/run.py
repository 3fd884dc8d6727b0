"""A whole training run: data, statistics, model, Lightning Trainer, checkpoints and model.pt."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import uuid
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

from mlpot import keys
from mlpot.config import Config, config_from_dict, resolve_data_path
from mlpot.data.datamodule import GraphDataModule, split_indices
from mlpot.data.io import read_structures
from mlpot.data.labels import LabelSpec
from mlpot.errors import ConfigError, ModelFileError
from mlpot.evaluation import format_errors, predict
from mlpot.models.io import load_model, save_model
from mlpot.models.potential import Potential
from mlpot.models.statistics import compute_statistics
from mlpot.training.callbacks import AtomicCheckpointIO, MetricTable, load_checkpoint
from mlpot.training.limits import check_ranges
from mlpot.training.module import VALID_LOSS, PotentialModule

logger = logging.getLogger(__name__)

#: Environment variable that passes the run folder to the processes DDP starts, so that all
#: processes of one run agree on it even when it was chosen from the clock.
RUN_FOLDER_VARIABLE = "MLPOT_RUN_FOLDER"
CONFIG_NAME = "config.yaml"
MODEL_NAME = "model.pt"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
#: Folder of the CSV metrics of a run's first start; each resume writes to logs-2, logs-3, ...
LOGS = "logs"


def label_spec(config: Config) -> LabelSpec:
    """Label names and units of the data section."""
    names = {item.name for item in dataclasses.fields(LabelSpec)}
    return LabelSpec(**{name: getattr(config.data, name) for name in names})


def is_ddp_child() -> bool:
    """Return whether this process was started by Lightning's DDP launcher for a rank other than 0."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def choose_run_folder(config: Config) -> Path:
    """Return the run folder: the configured one, the one of the parent DDP process, or runs/<date-time>.

    Multi-node runs need a configured folder, because each node chooses its own otherwise.
    """
    if config.training.output:
        return Path(config.training.output)
    inherited = os.environ.get(RUN_FOLDER_VARIABLE)
    if inherited and is_ddp_child():
        return Path(inherited)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / stamp


def load_run_config(folder: Path) -> Config:
    """Read the config a run folder was started with, for ``--resume``."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"cannot resume from {folder}: {CONFIG_NAME} not found there; is it an mlpot run folder?")
    return config_from_dict(yaml.safe_load(path.read_text()), where=str(path))


def _read_splits(config: Config):
    data = config.data
    labels = tuple(data.labels)
    spec = label_spec(config)
    train = read_structures(resolve_data_path(data.train_file), labels, spec)
    if data.valid_file:
        valid = read_structures(resolve_data_path(data.valid_file), labels, spec)
    else:
        if len(train) < 2:
            raise ConfigError(f"{data.train_file} has {len(train)} structure; set valid_file, since there is none to hold out")
        train_indices, valid_indices = split_indices(len(train), data.valid_fraction, config.training.seed)
        train, valid = [train[i] for i in train_indices], [train[i] for i in valid_indices]
    test = read_structures(resolve_data_path(data.test_file), labels, spec) if data.test_file else None
    isolated = None
    if data.isolated_atoms_file:
        # The isolated-atom file often comes from elsewhere than the data (eV extxyz beside rMD17's
        # kcal/mol npz), so it has its own energy key and unit.
        isolated_spec = LabelSpec(energy_key=data.isolated_atoms_energy_key, energy_unit=data.isolated_atoms_energy_unit)
        isolated = read_structures(resolve_data_path(data.isolated_atoms_file), (keys.ENERGY,), isolated_spec)
    return train, valid, test, isolated


def _check_labels(config: Config) -> None:
    label_spec(config).check_units()
    labels = config.data.labels
    if not labels:
        raise ConfigError("labels is empty; train on at least one of energy, forces, stress, dipole")
    if keys.DIPOLE in labels and not config.model.dipole:
        logger.info("the labels include dipole, so the dipole head is switched on (dipole: true)")
        config.model.dipole = True
    if config.model.dipole and keys.DIPOLE not in labels:
        raise ConfigError("dipole is true but the labels lack dipole: add dipole to labels or set dipole: false")


def _accelerator(device: str) -> str:
    if device == "gpu" and not torch.cuda.is_available():
        raise ConfigError("device is gpu but torch sees no CUDA GPU; use --device cpu, or install a CUDA build of torch")
    return {"cpu": "cpu", "gpu": "gpu", "auto": "auto"}[device]


def _log_version(folder: Path) -> str:
    """Return a logs folder name not yet used in ``folder``, so that a resume keeps earlier metrics."""
    name, number = LOGS, 1
    while (folder / name).exists():
        number += 1
        name = f"{LOGS}-{number}"
    return name


def build_trainer(config: Config, folder: Path) -> tuple[pl.Trainer, pl.callbacks.ModelCheckpoint]:
    """Build the Lightning Trainer with mlpot's callbacks, loggers and checkpoint files."""
    training = config.training
    checkpoint_folder = folder / CHECKPOINTS
    # best.ckpt whenever the validation loss improves, and last.ckpt at the end of every epoch,
    # for --resume. Lightning runs checkpoint callbacks in this order, so last.ckpt contains the
    # state of the best-checkpoint callback after this epoch's update. save_last=True with
    # save_top_k=0 writes last.ckpt only when training ends (Lightning 2.6), too late after a crash.
    best = pl.callbacks.ModelCheckpoint(
        dirpath=checkpoint_folder, filename="best", monitor=VALID_LOSS, mode="min", save_top_k=1, enable_version_counter=False
    )
    last = pl.callbacks.ModelCheckpoint(
        dirpath=checkpoint_folder, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    callbacks = [
        best,
        last,
        pl.callbacks.EarlyStopping(monitor=VALID_LOSS, mode="min", patience=training.early_stopping_patience),
        MetricTable(),
    ]
    loggers = [pl.loggers.CSVLogger(save_dir=str(folder), name="", version=_log_version(folder))]
    try:
        import tensorboard  # noqa: F401

        loggers.append(pl.loggers.TensorBoardLogger(save_dir=str(folder), name="", version="tensorboard"))
    except ImportError:
        pass

    world = training.devices * training.num_nodes
    trainer = pl.Trainer(
        accelerator=_accelerator(training.device),
        devices=training.devices,
        num_nodes=training.num_nodes,
        strategy="ddp" if world > 1 else "auto",
        max_epochs=training.max_epochs,
        max_time={"minutes": training.max_time} if training.max_time else None,
        gradient_clip_val=training.gradient_clip or None,
        deterministic=training.deterministic,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(folder),
        inference_mode=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_progress_bar=training.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=training.log_every_n_steps,
        plugins=[AtomicCheckpointIO()],
    )
    return trainer, best


def train(config: Config, resume: str | Path | None = None) -> Path:
    """Train a potential as ``config`` specifies and return the path of the written model.pt.

    With ``resume``, the run in that folder continues from its last checkpoint with the same raw
    weights, averaged weights, optimiser and scheduler state, epoch and best score; the epoch that
    was interrupted starts again. A run stopped before its first checkpoint starts from the
    beginning. Every checkpoint and model file is written atomically, so a run killed at any
    moment can be resumed.
    """
    check_ranges(config)
    if resume is not None:
        folder = Path(resume)
        checkpoint = folder / CHECKPOINTS / LAST_CHECKPOINT
        if not is_ddp_child():
            _remove_partial_files(folder)
        if checkpoint.is_file():
            _check_resume_checkpoint(folder, checkpoint)
        else:
            logger.info("%s has no %s/%s yet; training starts from the first epoch", folder, CHECKPOINTS, LAST_CHECKPOINT)
            checkpoint = None
            if not is_ddp_child():
                # A best.ckpt without last.ckpt comes from a first epoch killed between the two writes.
                (folder / CHECKPOINTS / BEST_CHECKPOINT).unlink(missing_ok=True)
    else:
        folder = choose_run_folder(config)
        checkpoint = None
        if (folder / CHECKPOINTS).exists() and not is_ddp_child():
            raise ConfigError(f"{folder} already contains a run; continue it with --resume {folder} or choose another --output")
    os.environ[RUN_FOLDER_VARIABLE] = str(folder)  # read by the processes that DDP starts
    _check_labels(config)

    if config.training.threads is not None:
        torch.set_num_threads(config.training.threads)
    pl.seed_everything(config.training.seed, workers=True, verbose=False)
    train_set, valid_set, test_set, isolated = _read_splits(config)
    statistics = compute_statistics(train_set, config.model.cutoff, isolated)
    potential = Potential(
        config.model,
        statistics.elements,
        statistics.reference_energies,
        energy_scale=statistics.energy_scale,
        avg_num_neighbours=statistics.avg_num_neighbours,
        interaction_shifts=statistics.interaction_shifts,
    )
    if config.training.init_from and checkpoint is None:
        _load_initial_weights(potential, Path(config.training.init_from))

    datamodule = GraphDataModule(
        train_set,
        valid_set,
        test_set,
        cutoff=config.model.cutoff,
        batch_size=config.data.batch_size,
        eval_batch_size=config.data.eval_batch_size,
        seed=config.training.seed,
        num_workers=config.data.num_workers,
    )
    world = config.training.devices * config.training.num_nodes
    steps_per_epoch = -(-len(train_set) // (config.data.batch_size * world))
    module = PotentialModule(potential, config.training, config.data.labels, steps_per_epoch)
    trainer, _ = build_trainer(config, folder)
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            _write_text_atomically(folder / CONFIG_NAME, yaml.safe_dump(config.to_dict(), sort_keys=False))
        logger.info("training on %d structures, validating on %d; run folder %s", len(train_set), len(valid_set), folder)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
    if not is_ddp_child():
        os.environ.pop(RUN_FOLDER_VARIABLE, None)

    model_path = folder / MODEL_NAME
    if trainer.is_global_zero:
        # The fixed path, not best.best_model_path, which Lightning drops when a run folder moves.
        # NOTE: Lightning then also drops the best score, so the first epoch after resuming a moved
        # folder overwrites best.ckpt even when it is worse than the earlier best.
        best_path = folder / CHECKPOINTS / BEST_CHECKPOINT
        if best_path.is_file():
            module.load_state_dict(load_checkpoint(best_path)["state_dict"])
        save_model(module.averaged_potential, model_path, statistics=statistics, metadata={"config": config.to_dict()})
        if test_set:
            _, errors = predict(module.averaged_potential, test_set, config.data.eval_batch_size)
            print(f"Test errors on {len(test_set)} structures of {config.data.test_file}:\n{format_errors(errors)}")
    return model_path


def _check_resume_checkpoint(folder: Path, checkpoint: Path) -> None:
    """Load ``checkpoint`` once, so that a damaged one fails before the data is read."""
    try:
        load_checkpoint(checkpoint)
    except ModelFileError as error:
        raise ModelFileError(
            f"cannot resume from {folder}: {error}. To go on from the best epoch instead, copy "
            f"{CHECKPOINTS}/{BEST_CHECKPOINT} to {CHECKPOINTS}/{LAST_CHECKPOINT}; to start the run again, delete "
            f"{CHECKPOINTS}/{LAST_CHECKPOINT}"
        ) from None


def _remove_partial_files(folder: Path) -> None:
    """Delete the temporary files of atomic writes that a killed run left in ``folder``."""
    for directory in (folder, folder / CHECKPOINTS):
        for path in directory.glob(".*.tmp"):
            logger.info("removing %s, a partial file of the interrupted run", path)
            path.unlink(missing_ok=True)


def _write_text_atomically(path: Path, text: str) -> None:
    # A new name opened with "x" gets the permissions of the umask, unlike mkstemp's 0600.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "x") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _load_initial_weights(potential: Potential, path: Path) -> None:
    """Copy the weights of another model into ``potential`` for fine-tuning."""
    source = load_model(path)
    if source.elements != potential.elements:
        raise ConfigError(
            f"init_from {path}: its elements {source.elements} differ from those of the training data {potential.elements}"
        )
    try:
        potential.load_state_dict(source.state_dict())
    except RuntimeError as error:
        raise ConfigError(f"init_from {path}: its architecture differs from this config's model section ({error})") from None
    logger.info("initial weights from %s", path)
