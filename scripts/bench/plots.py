"""The two benchmark figures: cost per call against system size, and force error against training time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Colour of each benchmark entry (package, or MACE with one settings name) in both figures.
COLOURS = {
    "mlpot": "tab:blue",
    "mlpot (model=equivariant)": "tab:purple",
    "mace (paper)": "tab:orange",
    "mace (small)": "tab:red",
    "schnetpack (PaiNN)": "tab:green",
}


def colour_of(label: str) -> str:
    return COLOURS.get(label, "black")


def plot_cost_per_call(calls: list[dict], path: Path) -> Path:
    """Plot ms per energy+forces call against atoms, log-log; float64 dashed, float32 solid."""
    figure, axes = plt.subplots(figsize=(5.5, 4.0), dpi=100)

    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for entry in calls:
        if entry.get("error"):
            continue
        key = (entry["package"], entry["label"], entry["dtype"])
        series.setdefault(key, []).append((entry["atoms"], entry["median_ms"]))

    for (package, label, dtype), points in sorted(series.items()):
        points.sort()
        atoms, milliseconds = zip(*points)
        axes.plot(
            atoms,
            milliseconds,
            marker="o",
            markersize=4,
            linestyle="--" if dtype == "float64" else "-",
            color=colour_of(label),
            label=f"{label}, {dtype}",
        )

    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("atoms")
    axes.set_ylabel("ms per energy+forces call")
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_force_error_against_time(runs: list[dict], path: Path) -> Path:
    """Plot validation force MAE against minutes of training, one panel per dataset.

    Lines are the per-epoch validation errors each package logged; a star marks the final test
    force MAE at the end of the training process.
    """
    datasets = list(dict.fromkeys(run["dataset"] for run in runs))
    figure, panels = plt.subplots(1, len(datasets), figsize=(4.0 * len(datasets), 3.6), dpi=100, squeeze=False)
    for axes, dataset in zip(panels[0], datasets):
        for run in (r for r in runs if r["dataset"] == dataset):
            colour = colour_of(run["label"])
            points = [
                (point["seconds"] / 60.0, point["forces_mae_meV_per_A"])
                for point in run["curve"]
                if "forces_mae_meV_per_A" in point
            ]
            if points:
                minutes, errors = zip(*points)
                axes.plot(minutes, errors, color=colour, linewidth=1.2, label=run["label"])
            test = run.get("test") or {}
            if "forces_mae_meV_per_A" in test:
                minutes = run["wall_seconds"] / 60.0
                axes.plot(minutes, test["forces_mae_meV_per_A"], marker="*", markersize=9, color=colour)
        axes.set_yscale("log")
        axes.set_title(dataset)
        axes.set_xlabel("minutes since the training process started")
        axes.grid(True, which="both", linewidth=0.3)
    panels[0][0].set_ylabel("force MAE (meV/Å)")
    panels[0][0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
