"""Lightning plug-ins of mlpot.

Atomic checkpoint files with safe loading, a metric table per epoch, early stopping with the
configured patience, and the message of an interrupted training.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from tqdm import tqdm

from mlpot.errors import ModelFileError
from mlpot.fileio import atomic_torch_save, safe_torch_load

logger = logging.getLogger(__name__)

#: Checkpoint entry with the SHA-256 of all other entries (see :func:`checkpoint_digest`). The zip
#: container of torch.save detects truncation but not a changed byte inside a tensor.
CHECKSUM_KEY = "mlpot_checksum"


def checkpoint_digest(value: Any) -> str:
    """Return the SHA-256 of a checkpoint's nested dicts, lists, tensors and plain values.

    Dict entries are hashed in the order of their sorted keys, so the digest does not depend on
    insertion order; tensors contribute their dtype, shape and bytes.
    """
    digest = hashlib.sha256()
    _update_digest(digest, value)
    return digest.hexdigest()


def _update_digest(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"dict {len(value)}:".encode())
        for key in sorted(value, key=repr):
            _update_digest(digest, key)
            _update_digest(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"list {len(value)}:".encode())
        for item in value:
            _update_digest(digest, item)
    elif isinstance(value, (set, frozenset)):
        _update_digest(digest, sorted(value, key=repr))
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a training checkpoint without running code from it, and check its checksum.

    Checkpoints written before the checksum existed load unchecked.

    Raises:
        ModelFileError: the file is missing, truncated, corrupted, contains pickled code, or is
            not a training checkpoint.
    """
    path = Path(path)
    checkpoint = safe_torch_load(path, map_location=map_location)
    if not isinstance(checkpoint, dict) or not {"state_dict", "pytorch-lightning_version"} <= set(checkpoint):
        hint = " (it is a model file)" if isinstance(checkpoint, dict) and checkpoint.get("format") == "mlpot-model" else ""
        raise ModelFileError(
            f"{path} is not a training checkpoint{hint}; give the checkpoint of a run, such as checkpoints/last.ckpt"
        )
    stored = checkpoint.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != checkpoint_digest(checkpoint):
        raise ModelFileError(
            f"{path}: checksum mismatch, so the checkpoint is corrupted. Replace it with another checkpoint "
            "of the run (for example best.ckpt copied to last.ckpt) or start the training again"
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint input and output that write atomically, add a checksum and load without unpickling code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save({**checkpoint, CHECKSUM_KEY: checkpoint_digest(checkpoint)}, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


class MetricTable(pl.Callback):
    """Prints one table row per epoch: learning rate, losses and validation errors with units."""

    COLUMNS = (
        ("train_loss_epoch", "train loss", "{:.4g}"),
        ("val_loss", "val loss", "{:.4g}"),
        ("val_energy_per_atom_mae_meV_per_atom", "E MAE meV/atom", "{:.3f}"),
        ("val_forces_mae_meV_per_A", "F MAE meV/Å", "{:.2f}"),
        ("val_stress_mae_meV_per_A3", "σ MAE meV/Å³", "{:.3f}"),
        ("val_dipole_mae_eA", "μ MAE e·Å", "{:.4f}"),
    )

    def __init__(self):
        self.started = time.monotonic()
        self.header_printed = False
        self.learning_rate: float | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The learning rate of the epoch's last step; the plateau scheduler may change it when
        # the validation ends.
        self.learning_rate = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        if "val_loss" not in metrics:
            # A resumed run repeats the end of the epoch of its checkpoint, whose metrics are gone.
            return
        columns = [column for column in self.COLUMNS if column[0] in metrics]
        if not self.header_printed:
            header = ["epoch", "lr"] + [title for _, title, _ in columns] + ["time s"]
            tqdm.write(" | ".join(f"{title:>14}" for title in header))
            self.header_printed = True
        learning_rate = self.learning_rate
        if learning_rate is None:
            learning_rate = trainer.optimizers[0].param_groups[0]["lr"]
        cells = [str(trainer.current_epoch), f"{learning_rate:.3g}"]
        cells += [template.format(float(metrics[key])) for key, _, template in columns]
        cells.append(f"{time.monotonic() - self.started:.0f}")
        tqdm.write(" | ".join(f"{cell:>14}" for cell in cells))


class ConfiguredEarlyStopping(pl.callbacks.EarlyStopping):
    """Early stopping that keeps the configured patience when it loads a checkpoint.

    Lightning's EarlyStopping restores the patience stored in the checkpoint (Lightning 2.6), so
    ``--early-stopping-patience`` given with ``--resume`` would have no effect. The state key is
    that of EarlyStopping, so checkpoints of either class load into the other.
    """

    @property
    def state_key(self) -> str:
        return "EarlyStopping" + repr({"monitor": self.monitor, "mode": self.mode})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience


class InterruptMessage(pl.Callback):
    """Logs, on rank 0, how to resume a training that Ctrl-C (SIGINT) interrupted.

    Lightning turns the KeyboardInterrupt into ``sys.exit(1)`` after the callbacks ran;
    :attr:`interrupted_epoch` lets the caller tell that exit from others.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.interrupted_epoch: int | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        self.interrupted_epoch = trainer.current_epoch
        if trainer.is_global_zero:
            logger.warning(
                "training interrupted in epoch %d; continue with: mlpot train --resume %s",
                trainer.current_epoch,
                self.folder,
            )
