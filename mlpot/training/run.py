"""A whole training run: data, statistics, model, Lightning Trainer, checkpoints and model.pt."""

from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
import threading
import uuid
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

from mlpot import keys
from mlpot.config import Config
from mlpot.data.datamodule import GraphDataModule
from mlpot.errors import ConfigError
from mlpot.evaluation import format_errors, predict
from mlpot.models.io import save_model
from mlpot.models.potential import Potential
from mlpot.models.statistics import compute_statistics
from mlpot.training.callbacks import (
    AtomicCheckpointIO,
    ConfiguredEarlyStopping,
    InterruptMessage,
    MetricTable,
    load_checkpoint,
)
from mlpot.training.datasets import label_spec, read_splits
from mlpot.training.limits import check_ranges
from mlpot.training.lock import RunLock
from mlpot.training.module import VALID_LOSS, PotentialModule
from mlpot.training.processes import is_ddp_child
from mlpot.training.resume import (
    BEST_CHECKPOINT,
    CHECKPOINTS,
    CONFIG_NAME,
    LAST_CHECKPOINT,
    MODEL_NAME,
    check_resume_checkpoint,
    check_resume_config,
    epochs_done,
    load_initial_weights,
    nothing_left_reason,
    remove_partial_files,
)

logger = logging.getLogger(__name__)

#: Environment variable that passes the run folder to the processes DDP starts, so that all
#: processes of one run agree on it even when it was chosen from the clock.
RUN_FOLDER_VARIABLE = "MLPOT_RUN_FOLDER"
#: Folder of the CSV metrics of a run's first start; each resume writes to logs-2, logs-3, ...
LOGS = "logs"


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


def show_progress_bar(config: Config) -> bool:
    """Return whether the Trainer shows a progress bar: the configured choice, else whether stdout is a terminal.

    A progress bar written to a file or pipe would interleave its updates with the metric table.
    """
    if config.training.progress_bar is not None:
        return config.training.progress_bar
    return sys.stdout.isatty()


def build_trainer(config: Config, folder: Path, interrupt: InterruptMessage | None = None) -> pl.Trainer:
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
        ConfiguredEarlyStopping(monitor=VALID_LOSS, mode="min", patience=training.early_stopping_patience),
        MetricTable(),
        interrupt or InterruptMessage(folder),
    ]
    loggers = [pl.loggers.CSVLogger(save_dir=str(folder), name="", version=_log_version(folder))]
    try:
        import tensorboard  # noqa: F401

        loggers.append(pl.loggers.TensorBoardLogger(save_dir=str(folder), name="", version="tensorboard"))
    except ImportError:
        pass

    world = training.devices * training.num_nodes
    return pl.Trainer(
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
        enable_progress_bar=show_progress_bar(config),
        enable_model_summary=False,
        log_every_n_steps=training.log_every_n_steps,
        plugins=[AtomicCheckpointIO()],
    )


def train(config: Config, resume: str | Path | None = None) -> Path:
    """Train a potential as ``config`` specifies and return the path of the written model.pt.

    With ``resume``, the run in that folder continues from its last checkpoint with the same raw
    weights, averaged weights, optimiser and scheduler state, epoch and best score; the epoch that
    was interrupted starts again. A run stopped before its first checkpoint starts from the
    beginning. ``config`` may differ from the run's config.yaml in the keys of
    :data:`~mlpot.training.resume.RESUME_KEYS` only. A resumed run with nothing left to train
    (max_epochs reached, or stopped early) keeps its model.pt and returns its path.

    Every checkpoint and model file is written atomically, so a run killed at any moment can be
    resumed. The rank-0 process holds the lock file of the run folder while it trains, so a
    second training into the same folder fails with a ConfigError.
    """
    check_ranges(config)
    folder = Path(resume) if resume is not None else choose_run_folder(config)
    os.environ[RUN_FOLDER_VARIABLE] = str(folder)  # read by the processes that DDP starts
    if is_ddp_child():
        return _train_in_folder(config, folder, resume is not None)
    advice = "wait for it to end before resuming" if resume is not None else "wait for it or choose another --output"
    try:
        with RunLock(folder, advice):
            return _train_in_folder(config, folder, resume is not None)
    finally:
        os.environ.pop(RUN_FOLDER_VARIABLE, None)


def _train_in_folder(config: Config, folder: Path, resuming: bool) -> Path:
    """Run the training of :func:`train` in ``folder``, whose lock this process holds unless it is a DDP child."""
    _check_labels(config)
    model_path = folder / MODEL_NAME
    checkpoint: Path | None = None
    skip_fit = False
    if resuming:
        check_resume_config(folder, config)
        checkpoint = folder / CHECKPOINTS / LAST_CHECKPOINT
        if not is_ddp_child():
            remove_partial_files(folder)
        if checkpoint.is_file():
            state = check_resume_checkpoint(folder, checkpoint)
            reason = nothing_left_reason(state, config)
            if reason is not None and model_path.is_file():
                logger.warning("nothing left to train in %s: %s. %s stays as it is", folder, reason, model_path)
                return model_path
            if reason is not None:
                logger.warning("nothing left to train in %s: %s. Writing the missing %s", folder, reason, model_path)
                skip_fit = True
            else:
                logger.info(
                    "resuming %s from %s, saved after epoch %d; training goes on with epoch %d (max_epochs %d)",
                    folder,
                    checkpoint,
                    epochs_done(state) - 1,
                    epochs_done(state),
                    config.training.max_epochs,
                )
        else:
            logger.info("%s has no %s/%s yet; training starts from the first epoch", folder, CHECKPOINTS, LAST_CHECKPOINT)
            checkpoint = None
            if not is_ddp_child():
                # A best.ckpt without last.ckpt comes from a first epoch killed between the two writes.
                (folder / CHECKPOINTS / BEST_CHECKPOINT).unlink(missing_ok=True)
    elif (folder / CHECKPOINTS).exists() and not is_ddp_child():
        raise ConfigError(f"{folder} already contains a run; continue it with --resume {folder} or choose another --output")

    if config.training.threads is not None:
        torch.set_num_threads(config.training.threads)
    pl.seed_everything(config.training.seed, workers=True, verbose=False)
    train_set, valid_set, test_set, isolated = read_splits(config)
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
        load_initial_weights(potential, Path(config.training.init_from))

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
    interrupt = InterruptMessage(folder)
    trainer = build_trainer(config, folder, interrupt)
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            _write_text_atomically(folder / CONFIG_NAME, yaml.safe_dump(config.to_dict(), sort_keys=False))
        logger.info("training on %d structures, validating on %d; run folder %s", len(train_set), len(valid_set), folder)

    if not skip_fit:
        _fit(trainer, module, datamodule, checkpoint, interrupt)

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


def _fit(trainer: pl.Trainer, module: PotentialModule, datamodule, checkpoint: Path | None, interrupt: InterruptMessage) -> None:
    """Run ``trainer.fit``, and raise KeyboardInterrupt where Lightning exits after a Ctrl-C.

    Lightning handles a KeyboardInterrupt by running the callbacks' ``on_exception`` and calling
    ``sys.exit(1)``, with SIGINT ignored from then on (Lightning 2.6). The KeyboardInterrupt lets
    the command line exit with code 130, and the SIGINT handler is restored for callers that go on.
    """
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
    except SystemExit:
        if interrupt.interrupted_epoch is None:
            raise
        raise KeyboardInterrupt from None
    finally:
        if previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous_handler)


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
