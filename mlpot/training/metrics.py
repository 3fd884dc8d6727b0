"""Error metrics of predictions against labels: sums that add up across batches and processes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mlpot import keys

#: Quantities compared with labels, with the unit of the raw error and how it is reported.
#: Each entry: label that must be present, reported unit, factor from the raw unit.
QUANTITIES = {
    "energy_per_atom": (keys.ENERGY, "meV/atom", 1000.0),
    "energy": (keys.ENERGY, "meV", 1000.0),
    "forces": (keys.FORCES, "meV/Å", 1000.0),
    "stress": (keys.STRESS, "meV/Å³", 1000.0),
    "dipole": (keys.DIPOLE, "e·Å", 1.0),
}

#: ASCII forms of the units, for metric names in log files and Lightning.
ASCII_UNITS = {"meV/atom": "meV_per_atom", "meV": "meV", "meV/Å": "meV_per_A", "meV/Å³": "meV_per_A3", "e·Å": "eA"}


@dataclass
class Error:
    """Mean absolute and root-mean-square error of one quantity, in its reported unit."""

    mae: float
    rmse: float
    count: int
    unit: str


def errors_of_batch(predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the raw errors (prediction - label) of every labelled quantity, flattened, in float64.

    Energies per atom divide by each structure's atom count. Stress entries of structures that are
    not periodic (NaN predictions) are left out.
    """
    errors = {}
    for name, (label, _, _) in QUANTITIES.items():
        if label not in batch or label not in predictions:
            continue
        difference = predictions[label].detach().to(torch.float64) - batch[label].to(torch.float64)
        if name == "energy_per_atom":
            difference = difference / batch[keys.NUM_ATOMS].to(torch.float64)
        difference = difference.reshape(-1)
        errors[name] = difference[torch.isfinite(difference)]
    return errors


class ErrorAccumulator:
    """Sums of |error|, error² and counts per quantity, to be reduced across batches and processes."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}

    def update(self, predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        """Add the errors of one batch."""
        for name, difference in errors_of_batch(predictions, batch).items():
            row = torch.stack([difference.abs().sum(), difference.pow(2).sum(), torch.tensor(float(difference.numel()), dtype=torch.float64, device=difference.device)])
            self.sums[name] = self.sums[name] + row if name in self.sums else row

    def as_tensor(self, names: list[str], device: torch.device) -> torch.Tensor:
        """Stack the sums of ``names`` into a (len(names), 3) tensor, zeros for names never seen."""
        rows = [self.sums.get(name, torch.zeros(3, dtype=torch.float64)).to(device) for name in names]
        return torch.stack(rows) if rows else torch.zeros((0, 3), dtype=torch.float64, device=device)

    def compute(self, summed: torch.Tensor | None = None, names: list[str] | None = None) -> dict[str, Error]:
        """Turn sums into errors in reported units; ``summed`` replaces local sums after a reduction."""
        names = names if names is not None else sorted(self.sums)
        table = summed if summed is not None else self.as_tensor(names, torch.device("cpu"))
        results = {}
        for name, (absolute, squared, count) in zip(names, table.tolist()):
            if count == 0:
                continue
            _, unit, factor = QUANTITIES[name]
            results[name] = Error(mae=factor * absolute / count, rmse=factor * math.sqrt(squared / count), count=int(count), unit=unit)
        return results


def metric_name(name: str, kind: str, unit: str) -> str:
    """Name of a logged metric, such as ``forces_mae_meV_per_A``."""
    return f"{name}_{kind}_{ASCII_UNITS[unit]}"
