"""Train a SchNetPack PaiNN potential with the settings of SchNetPack's rMD17 experiment config.

Usage: python -m bench.workers.spk_train --train train.xyz --valid valid.xyz --output DIR
       [--budget-seconds S] [--max-epochs N] [--batch-size B] [--seed 0]

The settings follow the hydra configs shipped in schnetpack 2.1.1 (``experiment/rmd17.yaml``,
``model/representation/painn.yaml``, ``task/*``, ``callbacks/*``, ``data/rmd17.yaml``), built
here through the Python API (see ``HYPERPARAMETERS``). The data are the benchmark's extxyz files
in eV and eV/Å. The rMD17 config trains in kcal/mol. The eV units here scale both loss terms
by the same constant, so their ratio is unchanged, and Adam's updates do not depend on that
scale.

Output lines for the benchmark: ``BENCH_HYPERPARAMETERS {json}``, ``BENCH_TRAINING_START``,
``BENCH_EPOCH {json}`` after each validation (errors in meV and meV/Å, seconds since the
training start) and ``BENCH_RESULT {json}`` with the path of the best model (EMA weights).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

from bench.workers import spk_compat  # noqa: F401  (must precede schnetpack)

import ase.io
import numpy as np
import pytorch_lightning as pl
import torch
import torchmetrics

import schnetpack as spk
import schnetpack.transform as trn

HYPERPARAMETERS = {
    "representation": "PaiNN",
    "n_atom_basis": 128,
    "n_interactions": 3,
    "shared_interactions": False,
    "shared_filters": False,
    "radial_basis": "GaussianRBF, 20 functions",
    "cutoff_fn": "CosineCutoff",
    "cutoff_A": 5.0,
    "batch_size": 10,
    "optimizer": "AdamW, lr 1e-3, weight decay 0",
    "scheduler": "ReduceLROnPlateau(val_loss), factor 0.5, patience 75, cooldown 10",
    "loss": "MSE, energy weight 0.01, forces weight 0.99",
    "ema_decay": 0.995,
    "early_stopping_patience": 200,
    "transforms": "SubtractCenterOfMass, RemoveOffsets(energy, remove_mean), MatScipyNeighborList, CastTo32",
    "precision": "float32",
}


class EpochReport(pl.Callback):
    """Prints the validation errors of each epoch with the seconds since the training start."""

    def __init__(self, start: float):
        self.start = start

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        report = {"epoch": trainer.current_epoch + 1, "seconds": time.monotonic() - self.start}
        for key, name in (("val_forces_mae", "forces_mae_meV_per_A"), ("val_energy_mae", "energy_mae_meV")):
            if key in metrics:
                report[name] = 1000.0 * float(metrics[key])
        print("BENCH_EPOCH " + json.dumps(report), flush=True)


def write_database(folder: Path, train_file: Path, valid_file: Path) -> tuple[Path, Path]:
    """Write the training and validation frames to one ASE database and their split file."""
    train = ase.io.read(train_file, index=":")
    valid = ase.io.read(valid_file, index=":")
    database = folder / "data.db"
    if database.exists():
        database.unlink()
    dataset = spk.data.ASEAtomsData.create(
        str(database), distance_unit="Ang", property_unit_dict={"energy": "eV", "forces": "eV/Ang"}
    )
    frames = train + valid
    properties = [
        {"energy": np.array([atoms.info["REF_energy"]]), "forces": np.asarray(atoms.arrays["REF_forces"])}
        for atoms in frames
    ]
    dataset.add_systems(properties, [ase.Atoms(numbers=a.numbers, positions=a.positions) for a in frames])
    split = folder / "split.npz"
    np.savez(
        split,
        train_idx=np.arange(len(train)),
        val_idx=np.arange(len(train), len(frames)),
        test_idx=np.array([], dtype=int),
    )
    return database, split


def build_task(cutoff: float) -> spk.task.AtomisticTask:
    painn = spk.representation.PaiNN(
        n_atom_basis=128,
        n_interactions=3,
        radial_basis=spk.nn.GaussianRBF(n_rbf=20, cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff),
        shared_interactions=False,
        shared_filters=False,
    )
    model = spk.model.NeuralNetworkPotential(
        representation=painn,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=128, output_key="energy", aggregation_mode="sum"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
        postprocessors=[trn.CastTo64(), trn.AddOffsets("energy", add_mean=True)],
    )

    def metrics() -> dict:
        return {
            "mae": torchmetrics.regression.MeanAbsoluteError(),
            "rmse": torchmetrics.regression.MeanSquaredError(squared=False),
        }

    outputs = [
        spk.task.ModelOutput(name="energy", loss_fn=torch.nn.MSELoss(), loss_weight=0.01, metrics=metrics()),
        spk.task.ModelOutput(name="forces", loss_fn=torch.nn.MSELoss(), loss_weight=0.99, metrics=metrics()),
    ]
    return spk.task.AtomisticTask(
        model=model,
        outputs=outputs,
        optimizer_cls=torch.optim.AdamW,
        optimizer_args={"lr": 1e-3, "weight_decay": 0.0},
        # schnetpack.train.ReduceLROnPlateau passes verbose= to torch's class, which torch 2.13
        # rejects. With the config's smoothing_factor 0 it steps exactly like torch's own class.
        scheduler_cls=torch.optim.lr_scheduler.ReduceLROnPlateau,
        scheduler_args={
            "mode": "min",
            "factor": 0.5,
            "patience": 75,
            "threshold": 0.0,
            "threshold_mode": "rel",
            "cooldown": 10,
            "min_lr": 0.0,
        },
        scheduler_monitor="val_loss",
        warmup_steps=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="training frames: extxyz, REF_energy, REF_forces")
    parser.add_argument("--valid", type=Path, required=True, help="validation frames, same format")
    parser.add_argument("--output", type=Path, required=True, help="run folder")
    parser.add_argument("--budget-seconds", type=float, help="wall-time limit of the training in seconds")
    parser.add_argument("--max-epochs", type=int, default=100000, help="maximum epochs (default: the config's 100000)")
    parser.add_argument("--batch-size", type=int, default=HYPERPARAMETERS["batch_size"], help="structures per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device to train on (default cpu)")
    args = parser.parse_args()
    if os.environ.get("MLPOT_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["MLPOT_BENCH_THREADS"]))

    args.output = args.output.resolve()
    hyperparameters = dict(HYPERPARAMETERS, batch_size=args.batch_size, max_epochs=args.max_epochs)
    print("BENCH_HYPERPARAMETERS " + json.dumps(hyperparameters), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed, workers=True)
    database, split = write_database(args.output, args.train, args.valid)
    cutoff = HYPERPARAMETERS["cutoff_A"]
    datamodule = spk.data.AtomsDataModule(
        str(database),
        batch_size=args.batch_size,
        split_file=str(split),
        transforms=[
            trn.SubtractCenterOfMass(),
            trn.RemoveOffsets("energy", remove_mean=True),
            trn.MatScipyNeighborList(cutoff=cutoff),
            trn.CastTo32(),
        ],
        property_units={"energy": "eV", "forces": "eV/Ang"},
        distance_unit="Ang",
        num_workers=0,
        pin_memory=False,
    )
    task = build_task(cutoff)
    best_model = args.output / "best_model"
    start = time.monotonic()
    callbacks = [
        spk.train.ModelCheckpoint(
            model_path=str(best_model),
            monitor="val_loss",
            save_top_k=1,
            save_last=True,
            mode="min",
            dirpath=str(args.output / "checkpoints"),
            filename="{epoch:02d}",
        ),
        pl.callbacks.EarlyStopping(monitor="val_loss", patience=200, mode="min", check_on_train_epoch_end=False),
        spk.train.ExponentialMovingAverage(decay=0.995),
        EpochReport(start),
    ]
    trainer = pl.Trainer(
        accelerator={"cpu": "cpu", "cuda": "gpu"}[args.device],
        devices=1,
        max_epochs=args.max_epochs,
        max_time=datetime.timedelta(seconds=args.budget_seconds) if args.budget_seconds else None,
        callbacks=callbacks,
        logger=pl.loggers.CSVLogger(str(args.output), name="logs"),
        default_root_dir=str(args.output),
        inference_mode=False,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision=32,
        gradient_clip_val=0,
    )
    print("BENCH_TRAINING_START", flush=True)
    trainer.fit(task, datamodule=datamodule)
    result = {
        "model": str(best_model),
        "epochs": trainer.current_epoch,
        "train_seconds": time.monotonic() - start,
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
