#!/usr/bin/env python
"""Train the equivariant dipole head and an invariant readout on rotated molecules, and plot both.

Both models see the same randomly rotated acetylacetone structures from
``data/acetylacetone/train_300K_xtb.xyz``, with the GFN2-xTB dipoles (e·Å) rotated alike, and are
tested on other frames of that file under fresh random rotations. The equivariant head
(:class:`mlpot.models.dipole.EquivariantDipoleHead`) rotates its output with the molecule. The
invariant readout (:class:`mlpot.models.dipole.InvariantDipoleReadout`) takes only
rotation-invariant features, so it predicts the same three numbers for every orientation of one geometry. Its
least-squares optimum is the orientation average of the dipole, which is close to zero.

The script prints the mean absolute error of the dipole components (e·Å) of each model on the
test structures, and of predicting zero, and saves a parity plot of predicted against reference
components for both models side by side.

Example, from the repository root. It took 12 s of CPU time with torch 2.13 on one thread, and
several threads on busy cores made it many times slower::

    OMP_NUM_THREADS=1 python scripts/dipole_collapse.py --output docs/figures/dipole_collapse.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mlpot import keys
from mlpot.config import ModelConfig
from mlpot.data.graph import AtomicGraph, atoms_to_graph, collate
from mlpot.data.io import read_structures
from mlpot.data.labels import Structure
from mlpot.models.dipole import build_invariant_dipole_readout
from mlpot.models.potential import Potential
from mlpot.models.statistics import average_num_neighbours

REPOSITORY = Path(__file__).resolve().parents[1]
DATA = REPOSITORY / "data" / "acetylacetone" / "train_300K_xtb.xyz"
ELEMENTS = [1, 6, 8]
CUTOFF = 4.0
KINDS = ("equivariant", "invariant")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="extxyz file with dipoles in e·Å (default: bundled)")
    parser.add_argument("--train-frames", type=int, default=32, help="geometries to train on (default 32)")
    parser.add_argument("--test-frames", type=int, default=32, help="other geometries to test on (default 32)")
    parser.add_argument("--rotations", type=int, default=8, help="random rotations of each geometry (default 8)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of each model (default 300)")
    parser.add_argument("--batch-size", type=int, default=32, help="structures per step (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the frames, rotations and weights")
    parser.add_argument("--output", type=Path, default=Path("dipole_collapse.png"), help="PNG file to write")
    return parser.parse_args()


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Draw a Haar-random rotation matrix (determinant +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotated_graphs(structures: list[Structure], rotations: int, rng: np.random.Generator) -> list[AtomicGraph]:
    """Return graphs of ``rotations`` randomly rotated copies of each structure, dipole labels rotated alike.

    The molecules are neutral, so their dipole does not depend on the point they rotate about.
    """
    graphs = []
    for structure in structures:
        for _ in range(rotations):
            matrix = random_rotation(rng)
            atoms = structure.atoms.copy()
            atoms.positions = atoms.positions @ matrix.T
            graph = atoms_to_graph(atoms, CUTOFF)
            graph[keys.DIPOLE] = torch.tensor(matrix @ structure.labels[keys.DIPOLE]).unsqueeze(0)
            graphs.append(graph)
    return graphs


def build_model(kind: str, avg_num_neighbours: float, seed: int) -> Potential:
    """Build a small potential whose dipole comes from the equivariant head or the invariant readout."""
    config = ModelConfig(
        cutoff=CUTOFF,
        num_features=16,
        num_radial=6,
        radial_hidden=16,
        num_interactions=1,
        lmax=1,
        dtype="float32",
        dipole=True,
        dipole_features=8,
        dipole_lmax=2,
        dipole_layers=1,
    )
    torch.manual_seed(seed)
    potential = Potential(config, ELEMENTS, [0.0] * len(ELEMENTS), avg_num_neighbours=avg_num_neighbours)
    if kind == "invariant":
        irreps = potential.energy_model.irreps_out
        potential.dipole_head = build_invariant_dipole_readout(config, irreps, len(ELEMENTS))
    return potential


def train(potential: Potential, graphs: list[AtomicGraph], steps: int, batch_size: int, seed: int) -> None:
    """Fit the dipoles with Adam on the mean squared component error, (e·Å)², lr 1e-2 decaying to 1e-3."""
    optimiser = torch.optim.Adam(potential.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps, eta_min=1e-3)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(graphs), generator=generator).tolist()
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):
            order = torch.randperm(len(graphs), generator=generator).tolist()
            position = 0
        batch = collate([graphs[index] for index in order[position : position + batch_size]])
        position += batch_size
        predicted = potential(batch, compute_forces=False)[keys.DIPOLE]
        loss = (predicted - batch[keys.DIPOLE].to(predicted.dtype)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()


def predict_dipoles(potential: Potential, graphs: list[AtomicGraph]) -> np.ndarray:
    """Return the (n_graphs, 3) predicted dipoles in e·Å."""
    with torch.no_grad():
        outputs = potential(collate(graphs), compute_forces=False)
    return outputs[keys.DIPOLE].double().numpy()


def plot(reference: np.ndarray, predictions: dict[str, np.ndarray], errors: dict[str, float], path: Path) -> None:
    """Save one parity panel per model: predicted against reference dipole components in e·Å."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit = 1.1 * float(max(np.abs(reference).max(), *(np.abs(p).max() for p in predictions.values())))
    figure, axes = plt.subplots(1, len(predictions), figsize=(8.0, 4.0), dpi=100, sharey=True)
    titles = {"equivariant": "equivariant head", "invariant": "invariant readout"}
    for panel, (kind, predicted) in zip(axes, predictions.items()):
        for component, (name, colour) in enumerate(zip("xyz", ("tab:blue", "tab:orange", "tab:green"))):
            panel.scatter(reference[:, component], predicted[:, component], s=6, alpha=0.6, color=colour, label=name)
        panel.plot([-limit, limit], [-limit, limit], color="black", linewidth=0.8)
        panel.set_xlim(-limit, limit)
        panel.set_ylim(-limit, limit)
        panel.set_aspect("equal")
        panel.set_title(f"{titles[kind]}: MAE {errors[kind]:.3f} e·Å")
        panel.set_xlabel("reference dipole component (e·Å)")
    axes[0].set_ylabel("predicted dipole component (e·Å)")
    axes[0].legend(loc="upper left", markerscale=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    args = parse_arguments()
    rng = np.random.default_rng(args.seed)
    structures = read_structures(args.data, labels=(keys.DIPOLE,))
    needed = args.train_frames + args.test_frames
    if needed > len(structures):
        raise SystemExit(f"{args.data} has {len(structures)} frames; --train-frames plus --test-frames is {needed}")
    chosen = rng.choice(len(structures), size=needed, replace=False)
    train_structures = [structures[index] for index in chosen[: args.train_frames]]
    test_structures = [structures[index] for index in chosen[args.train_frames :]]

    train_graphs = rotated_graphs(train_structures, args.rotations, rng)
    test_graphs = rotated_graphs(test_structures, args.rotations, rng)
    reference = torch.cat([graph[keys.DIPOLE] for graph in test_graphs]).numpy()
    neighbours = average_num_neighbours(train_structures, CUTOFF)
    print(
        f"{len(train_graphs)} training and {len(test_graphs)} test structures "
        f"({args.train_frames} and {args.test_frames} geometries x {args.rotations} rotations) from {args.data}"
    )

    predictions, errors = {}, {}
    for kind in KINDS:
        start = time.perf_counter()
        potential = build_model(kind, neighbours, args.seed)
        train(potential, train_graphs, args.steps, args.batch_size, args.seed)
        predictions[kind] = predict_dipoles(potential, test_graphs)
        errors[kind] = float(np.mean(np.abs(predictions[kind] - reference)))
        print(f"{kind:<12} dipole component MAE {errors[kind]:.4f} e·Å ({time.perf_counter() - start:.0f} s)")
    print(f"{'zero':<12} dipole component MAE {float(np.mean(np.abs(reference))):.4f} e·Å (predicting 0)")

    plot(reference, predictions, errors, args.output)
    print(f"figure written to {args.output}")


if __name__ == "__main__":
    main()
