"""Lightning plug-ins of mlpot: atomic checkpoint files, safe loading and a metric table per epoch."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from tqdm import tqdm

from mlpot.fileio import atomic_torch_save, safe_torch_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint input and output that write atomically and load without unpickling code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return safe_torch_load(path, map_location=map_location or "cpu")


class MetricTable(pl.Callback):
    """Prints one table row per epoch: learning rate, losses and validation errors with units."""

    COLUMNS = (
        ("train_loss", "train loss", "{:.4g}"),
        ("val_loss", "val loss", "{:.4g}"),
        ("val_energy_per_atom_mae_meV_per_atom", "E MAE meV/atom", "{:.3f}"),
        ("val_forces_mae_meV_per_A", "F MAE meV/Å", "{:.2f}"),
        ("val_stress_mae_meV_per_A3", "σ MAE meV/Å³", "{:.3f}"),
        ("val_dipole_mae_eA", "μ MAE e·Å", "{:.4f}"),
    )

    def __init__(self):
        self.started = time.monotonic()
        self.header_printed = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        columns = [column for column in self.COLUMNS if column[0] in metrics]
        if not self.header_printed:
            header = ["epoch", "lr"] + [title for _, title, _ in columns] + ["time s"]
            tqdm.write(" | ".join(f"{title:>14}" for title in header))
            self.header_printed = True
        learning_rate = trainer.optimizers[0].param_groups[0]["lr"]
        cells = [str(trainer.current_epoch), f"{learning_rate:.3g}"]
        cells += [template.format(float(metrics[key])) for key, _, template in columns]
        cells.append(f"{time.monotonic() - self.started:.0f}")
        tqdm.write(" | ".join(f"{cell:>14}" for cell in cells))
