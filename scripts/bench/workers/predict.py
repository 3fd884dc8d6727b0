"""Predict energies and forces of test frames with a trained model of one package.

Usage: python -m bench.workers.predict --package {mlpot,mace,schnetpack} --model FILE
       --structures test.xyz --output predictions.npz [--batch-size 50]

Each package predicts in batches through its own evaluation route, in the dtype it was trained
in (float32 for every benchmark model): mlpot through ``mlpot.evaluation.predict``, MACE through
its ``mace_eval_configs`` command, SchNetPack through its ``AtomsConverter`` and the saved
model with its post-processing (energy offset added back). The npz contains ``energy`` (frames,)
in eV and ``forces`` (atoms of all frames, 3) in eV/Å, in the order of the structure file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def predict_mlpot(model: Path, structures: Path, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from mlpot import keys
    from mlpot.data.io import read_structures
    from mlpot.data.labels import LabelSpec
    from mlpot.evaluation import predict
    from mlpot.models.io import load_model

    potential = load_model(model)
    frames = read_structures(structures, (), LabelSpec(), elements=potential.elements)
    predictions, _ = predict(potential, frames, batch_size)
    energy = np.array([float(p[keys.ENERGY]) for p in predictions])
    forces = np.concatenate([p[keys.FORCES] for p in predictions])
    return energy, forces


def predict_mace(model: Path, structures: Path, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    import ase.io
    from mace.cli import eval_configs

    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "predicted.xyz"
        sys.argv = [
            "mace_eval_configs",
            f"--configs={structures}",
            f"--model={model}",
            f"--output={output}",
            "--device=cpu",
            "--default_dtype=float32",
            f"--batch_size={batch_size}",
        ]
        eval_configs.main()
        frames = ase.io.read(output, index=":")
    energy = np.array([atoms.info["MACE_energy"] for atoms in frames])
    forces = np.concatenate([atoms.arrays["MACE_forces"] for atoms in frames])
    return energy, forces


def predict_schnetpack(model: Path, structures: Path, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from bench.workers import spk_compat  # noqa: F401  (must precede schnetpack)

    import ase.io
    import torch
    from schnetpack.interfaces import AtomsConverter
    from schnetpack.transform import MatScipyNeighborList
    from schnetpack.utils.compatibility import load_model

    network = load_model(str(model), device="cpu").eval()
    cutoff = float(network.representation.cutoff)
    converter = AtomsConverter(neighbor_list=MatScipyNeighborList(cutoff=cutoff), dtype=torch.float32, device="cpu")
    frames = ase.io.read(structures, index=":")
    energies, forces = [], []
    for start in range(0, len(frames), batch_size):
        chunk = [ase.Atoms(numbers=a.numbers, positions=a.positions) for a in frames[start : start + batch_size]]
        outputs = network(converter(chunk))
        energies.append(outputs["energy"].detach().to(torch.float64).numpy().reshape(-1))
        forces.append(outputs["forces"].detach().to(torch.float64).numpy())
    return np.concatenate(energies), np.concatenate(forces)


PREDICTORS = {"mlpot": predict_mlpot, "mace": predict_mace, "schnetpack": predict_schnetpack}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", choices=sorted(PREDICTORS), required=True)
    parser.add_argument("--model", type=Path, required=True, help="model file written by the package's training")
    parser.add_argument("--structures", type=Path, required=True, help="extxyz frames to predict")
    parser.add_argument("--output", type=Path, required=True, help="npz file for the predictions")
    parser.add_argument("--batch-size", type=int, default=50, help="structures per batch (default 50)")
    args = parser.parse_args()
    if os.environ.get("MLPOT_BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["MLPOT_BENCH_THREADS"]))
    energy, forces = PREDICTORS[args.package](args.model.resolve(), args.structures.resolve(), args.batch_size)
    np.savez(args.output, energy=energy, forces=forces)
    print(f"BENCH_PREDICTED {len(energy)} structures", flush=True)


if __name__ == "__main__":
    main()
