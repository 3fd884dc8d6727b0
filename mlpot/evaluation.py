"""Predictions of a potential for many structures, their errors against labels, and parity plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mlpot import keys
from mlpot.data.graph import collate, graph_to, structure_to_graph
from mlpot.data.labels import Structure
from mlpot.devices import resolve_device
from mlpot.models.potential import Potential
from mlpot.training.metrics import Error, ErrorAccumulator

logger = logging.getLogger(__name__)

#: One Debye in e·Å.
DEBYE = 0.20819433442462576

_PER_ATOM = (keys.FORCES, keys.CHARGES, keys.ATOMIC_DIPOLES, keys.ATOMIC_ENERGIES)


def predict(
    potential: Potential,
    structures: Sequence[Structure],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[list[dict[str, np.ndarray]], dict[str, Error]]:
    """Predict every structure and compare with the labels it carries.

    Returns one dict of float64 arrays per structure (energy, atomic_energies, forces, and stress
    for periodic structures, dipole and charges when the model predicts them), and the errors of
    each labelled quantity (see :mod:`mlpot.training.metrics`). An invalid or unavailable
    ``device`` raises :class:`~mlpot.errors.ConfigError`.
    """
    device = resolve_device(device)
    potential = potential.to(device).eval()
    accumulator = ErrorAccumulator()
    results: list[dict[str, np.ndarray]] = []
    starts = range(0, len(structures), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", disable=not progress):
        chunk = structures[start : start + batch_size]
        batch = graph_to(collate([structure_to_graph(s, potential.cutoff) for s in chunk]), device)
        any_periodic = bool(batch[keys.PBC].any())
        predictions = potential(batch, compute_forces=True, compute_stress=any_periodic)
        accumulator.update(predictions, batch)
        results.extend(_split(predictions, batch))
    return results, accumulator.compute()


def _split(predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> list[dict[str, np.ndarray]]:
    counts = batch[keys.NUM_ATOMS].tolist()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    periodic = batch[keys.PBC].any(dim=1).tolist()
    arrays = {name: value.detach().to("cpu", torch.float64).numpy() for name, value in predictions.items()}
    per_structure = []
    for index, count in enumerate(counts):
        entry = {}
        for name, array in arrays.items():
            if name in _PER_ATOM:
                entry[name] = array[offsets[index] : offsets[index] + count]
            elif name == keys.STRESS and not periodic[index]:
                continue
            else:
                entry[name] = array[index]
        per_structure.append(entry)
    return per_structure


def format_errors(errors: dict[str, Error]) -> str:
    """Render errors as a fixed-width table with units; dipoles also in Debye."""
    lines = [f"{'quantity':<16} {'MAE':>12} {'RMSE':>12}  unit", "-" * 52]
    for name, error in errors.items():
        lines.append(f"{name:<16} {error.mae:>12.4f} {error.rmse:>12.4f}  {error.unit}")
        if name == "dipole":
            lines.append(f"{'dipole':<16} {error.mae / DEBYE:>12.4f} {error.rmse / DEBYE:>12.4f}  Debye")
    return "\n".join(lines)


def parity_plots(
    structures: Sequence[Structure], predictions: Sequence[dict[str, np.ndarray]], folder: str | Path
) -> list[Path]:
    """Write one PNG parity plot (predicted against reference) per labelled quantity; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    panels = {
        keys.ENERGY: ("energy per atom", "eV/atom", lambda s, p: (s.labels[keys.ENERGY] / len(s.atoms), p[keys.ENERGY] / len(s.atoms))),
        keys.FORCES: ("force components", "eV/Å", lambda s, p: (s.labels[keys.FORCES], p[keys.FORCES])),
        keys.STRESS: ("stress components", "eV/Å³", lambda s, p: (s.labels[keys.STRESS], p.get(keys.STRESS))),
        keys.DIPOLE: ("dipole components", "e·Å", lambda s, p: (s.labels[keys.DIPOLE], p.get(keys.DIPOLE))),
    }
    written = []
    for label, (title, unit, pick) in panels.items():
        pairs = [pick(s, p) for s, p in zip(structures, predictions) if label in s.labels]
        pairs = [(np.ravel(ref), np.ravel(pred)) for ref, pred in pairs if pred is not None]
        if not pairs:
            continue
        reference = np.concatenate([ref for ref, _ in pairs])
        predicted = np.concatenate([pred for _, pred in pairs])
        figure, axes = plt.subplots(figsize=(4.5, 4.5), dpi=120)
        axes.scatter(reference, predicted, s=4, alpha=0.5)
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        axes.plot([low, high], [low, high], color="black", linewidth=0.8)
        mae = float(np.mean(np.abs(predicted - reference)))
        axes.set_title(f"{title}: MAE {mae:.4g} {unit}")
        axes.set_xlabel(f"reference ({unit})")
        axes.set_ylabel(f"predicted ({unit})")
        figure.tight_layout()
        path = folder / f"parity_{label}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written
