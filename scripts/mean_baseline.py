"""Errors of the trivial model that predicts the training mean, as a floor for trained models.

The baseline predicts every test energy as the mean training energy per atom times the atom
count, and every force component as the mean training force component (close to zero). Units:
energies in meV and meV/atom, forces in meV/Å, as ``mlpot evaluate`` prints them.

Example (rMD17 ethanol, split 01):

    python scripts/mean_baseline.py data/rmd17/rmd17_ethanol_train_01.npz \\
        data/rmd17/rmd17_ethanol_test_01.npz --energy-unit kcal/mol
"""

from __future__ import annotations

import argparse

import numpy as np

from mlpot import keys
from mlpot.data.io import read_structures
from mlpot.data.labels import LabelSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", help="training structures (energies and forces)")
    parser.add_argument("test", help="test structures (energies and forces)")
    parser.add_argument("--energy-unit", default=None, help="unit of the energies in both files (default eV)")
    args = parser.parse_args()

    spec = LabelSpec(energy_unit=args.energy_unit)
    labels = (keys.ENERGY, keys.FORCES)
    train = read_structures(args.train, labels, spec)
    test = read_structures(args.test, labels, spec)

    energy_per_atom = np.mean([float(s.labels[keys.ENERGY]) / len(s.atoms) for s in train])
    mean_force = np.concatenate([s.labels[keys.FORCES] for s in train]).mean(axis=0)

    energy_errors = np.array([energy_per_atom * len(s.atoms) - float(s.labels[keys.ENERGY]) for s in test])
    per_atom_errors = energy_errors / np.array([len(s.atoms) for s in test])
    force_errors = np.concatenate([mean_force - s.labels[keys.FORCES] for s in test]).reshape(-1)

    print(f"mean baseline: trained on {len(train)} structures of {args.train}, tested on {len(test)} of {args.test}")
    print(f"{'quantity':<16} {'MAE':>12} {'RMSE':>12}  unit")
    for name, errors, unit in (
        ("energy", energy_errors, "meV"),
        ("energy_per_atom", per_atom_errors, "meV/atom"),
        ("forces", force_errors, "meV/Å"),
    ):
        mae = 1000 * np.mean(np.abs(errors))
        rmse = 1000 * np.sqrt(np.mean(errors**2))
        print(f"{name:<16} {mae:>12.4f} {rmse:>12.4f}  {unit}")


if __name__ == "__main__":
    main()
