"""The LightningModule that trains a potential on energies, forces, stress and dipoles."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

from mlpot import keys
from mlpot.config import TrainingConfig
from mlpot.models.potential import Potential
from mlpot.training.ema import ExponentialMovingAverage
from mlpot.training.metrics import QUANTITIES, ErrorAccumulator, metric_name

logger = logging.getLogger(__name__)

#: Name of the monitored validation loss, used by the scheduler, early stopping and checkpoints.
VALID_LOSS = "val_loss"
#: Checkpoint entry with the state of the plateau scheduler (see :class:`PotentialModule`).
PLATEAU_STATE = "mlpot_lr_plateau"


class PotentialModule(pl.LightningModule):
    """Weighted squared-error training of a :class:`~mlpot.models.potential.Potential`.

    The loss is w_E·mean((ΔE/N)²) + w_F·mean(ΔF²) + w_σ·mean(Δσ²) + w_μ·mean(Δμ²) over the labels
    the data has (energy per atom in eV, force and stress components, dipole components in e·Å).
    Validation and the saved model use the exponential moving average of the weights.

    The module steps its ReduceLROnPlateau scheduler itself, at the end of each validation, and
    stores its state in the checkpoint. Lightning would step it after the epoch-end checkpoint
    is written and skip that step when resuming from the checkpoint, so a resumed run would
    reduce the learning rate one epoch late.
    """

    def __init__(self, potential: Potential, config: TrainingConfig, labels: list[str], steps_per_epoch: int):
        super().__init__()
        self.potential = potential
        self.config = config
        self.labels = list(labels)
        self.ema = ExponentialMovingAverage(potential, config.ema_decay) if config.ema_decay > 0 else None
        self.warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch)) if config.warmup_epochs > 0 else 0
        self.weights = {
            keys.ENERGY: config.energy_weight,
            keys.FORCES: config.forces_weight,
            keys.STRESS: config.stress_weight,
            keys.DIPOLE: config.dipole_weight,
        }
        self.valid_errors = ErrorAccumulator()
        self.valid_loss_sum = torch.zeros(2, dtype=torch.float64)
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._restored_plateau_state: dict | None = None

    @property
    def averaged_potential(self) -> Potential:
        """The potential with averaged weights, or the trained one when the average is off."""
        return self.ema.model if self.ema is not None else self.potential

    def _predict(self, potential: Potential, batch: dict, training: bool) -> dict[str, torch.Tensor]:
        return potential(
            batch,
            compute_forces=keys.FORCES in self.labels,
            compute_stress=keys.STRESS in self.labels,
            create_graph=training,
        )

    def loss(self, predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return the weighted loss of one batch (a float64 scalar)."""
        total = torch.zeros((), dtype=torch.float64, device=batch[keys.POSITIONS].device)
        for label in self.labels:
            difference = predictions[label].to(torch.float64) - batch[label].to(torch.float64)
            if label == keys.ENERGY:
                difference = difference / batch[keys.NUM_ATOMS].to(torch.float64)
            finite = torch.isfinite(difference)
            if bool(finite.any()):
                total = total + self.weights[label] * difference[finite].pow(2).mean()
        return total

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self.loss(self._predict(self.potential, batch, training=True), batch)
        # on_epoch adds train_loss_epoch, the mean over the epoch weighted by batch size.
        self.log("train_loss", loss.detach(), batch_size=int(batch[keys.NUM_ATOMS].numel()), prog_bar=True, on_epoch=True)
        return loss

    def optimizer_step(self, epoch, batch_index, optimizer, optimizer_closure=None) -> None:
        # Linear warm-up of the learning rate over the first steps; the plateau scheduler takes over after.
        if self.warmup_steps and self.global_step < self.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = self.config.learning_rate * (self.global_step + 1) / self.warmup_steps
        super().optimizer_step(epoch, batch_index, optimizer, optimizer_closure)

    def on_train_batch_end(self, outputs, batch, batch_index) -> None:
        if self.ema is not None:
            self.ema.update(self.potential)

    def on_validation_epoch_start(self) -> None:
        self.valid_errors = ErrorAccumulator()
        self.valid_loss_sum = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_index: int) -> None:
        predictions = self._predict(self.averaged_potential, batch, training=False)
        num_graphs = float(batch[keys.NUM_ATOMS].numel())
        loss = self.loss(predictions, batch).detach()
        self.valid_loss_sum += torch.stack([loss * num_graphs, loss.new_tensor(num_graphs)])
        self.valid_errors.update(predictions, batch)

    def on_validation_epoch_end(self) -> None:
        # Sum over processes before dividing, so that DDP gives the metrics of the whole set.
        names = [name for name in QUANTITIES if QUANTITIES[name][0] in self.labels]
        sums = self.valid_errors.as_tensor(names, self.device)
        loss_sum = self.valid_loss_sum.to(self.device)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            loss_sum = self.trainer.strategy.reduce(loss_sum, reduce_op="sum")
        valid_loss = loss_sum[0] / loss_sum[1].clamp_min(1.0)
        # The values are already equal on every process; sync_dist averages equal numbers, which
        # changes nothing and marks them as global for Lightning.
        self.log(VALID_LOSS, valid_loss.float(), prog_bar=True, sync_dist=True)
        if self.plateau is not None and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.plateau.step(float(valid_loss))
        for name, error in self.valid_errors.compute(sums, names).items():
            self.log(f"val_{metric_name(name, 'mae', error.unit)}", error.mae, sync_dist=True)
            self.log(f"val_{metric_name(name, 'rmse', error.unit)}", error.rmse, sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.potential.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            amsgrad=True,
        )
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.config.lr_factor, patience=self.config.lr_patience, min_lr=self.config.min_lr
        )
        if self._restored_plateau_state is not None:
            self.plateau.load_state_dict(self._restored_plateau_state)
            self._restored_plateau_state = None
        return optimizer

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.plateau is not None:
            checkpoint[PLATEAU_STATE] = self.plateau.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning calls this before configure_optimizers, which applies the state.
        self._restored_plateau_state = checkpoint.get(PLATEAU_STATE)
