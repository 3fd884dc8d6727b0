"""The benchmark datasets, written once as extxyz splits in eV and eV/Å that every package reads.

Each dataset is split into training, validation and test files here, so all packages train and
validate on the same frames and are tested on the same frames:

- rMD17 ethanol and aspirin, split 01: 950 training and 50 validation frames drawn from the
  1000 frames of the training file with mlpot's seeded split (``split_indices``, seed 0), and
  the 1000 frames of the test file. Energies kcal/mol and forces kcal/mol/Å in the files are
  converted with mlpot's unit table.
- acetylacetone at 300 K: 450 training and 50 validation frames of train_300K.xyz (same split
  function, validation fraction 0.1), and the 650 frames of test_MD_300K.xyz. Already eV, eV/Å.

Labels are stored as ``REF_energy`` (info) and ``REF_forces`` (arrays), so ASE does not turn
them into calculator results and no package mistakes them for its own predictions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ase
import ase.io
import numpy as np

from mlpot import keys
from mlpot.data.datamodule import split_indices
from mlpot.data.io import read_structures
from mlpot.data.labels import LabelSpec, Structure

from bench.common import REPOSITORY

ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"
DATA = REPOSITORY / "data"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Source files and split of one benchmark dataset.

    ``mlpot_config`` is the config that ``mlpot train`` starts from, and ``mlpot_overrides`` the
    command-line flags that the benchmark adds to it (besides data paths and limits).
    """

    name: str
    train_file: Path
    test_file: Path
    isolated_atoms_file: Path
    valid_fraction: float
    energy_unit: str | None
    mlpot_config: Path
    mlpot_overrides: dict[str, str] = dataclasses.field(default_factory=dict)


DATASETS = {
    "ethanol": Dataset(
        "ethanol",
        DATA / "rmd17" / "rmd17_ethanol_train_01.npz",
        DATA / "rmd17" / "rmd17_ethanol_test_01.npz",
        DATA / "ethanol" / "isolated_atoms.xyz",
        0.05,
        "kcal/mol",
        DATA / "configs" / "rmd17_ethanol.yaml",
    ),
    "aspirin": Dataset(
        "aspirin",
        DATA / "rmd17" / "rmd17_aspirin_train_01.npz",
        DATA / "rmd17" / "rmd17_aspirin_test_01.npz",
        DATA / "ethanol" / "isolated_atoms.xyz",
        0.05,
        "kcal/mol",
        DATA / "configs" / "rmd17_aspirin.yaml",
    ),
    "acetylacetone": Dataset(
        "acetylacetone",
        DATA / "acetylacetone" / "train_300K.xyz",
        DATA / "acetylacetone" / "test_MD_300K.xyz",
        DATA / "acetylacetone" / "isolated_atoms.xyz",
        0.1,
        None,
        DATA / "configs" / "acetylacetone.yaml",
        # The shipped config is the small demonstration model (32 features, 2 interactions, 60
        # epochs). The benchmark trains the size and epoch limit of the rMD17 configs instead.
        {"num_features": "64", "num_interactions": "3", "max_epochs": "1000"},
    ),
}


@dataclasses.dataclass
class PreparedDataset:
    """Split files of a dataset in eV and eV/Å, with isolated-atom energies E0 in eV."""

    name: str
    folder: Path
    train: Path
    valid: Path
    test: Path
    isolated_atoms: Path
    reference: Path
    e0: dict[int, float]
    counts: dict[str, int]

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["e0"] = {str(number): energy for number, energy in self.e0.items()}
        return values


def prepare(
    dataset: Dataset,
    folder: Path,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> PreparedDataset:
    """Write the training, validation and test files of ``dataset`` into ``folder``.

    ``train_limit`` and ``test_limit`` keep only the first frames of the training split and of
    the test file, for quick trial runs. The validation split is cut to ``train_limit`` too.
    ``reference.npz`` contains the test labels: ``energy`` (frames,) eV, ``forces`` (atoms in all
    frames, 3) eV/Å and ``num_atoms`` (frames,).
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec = LabelSpec(energy_unit=dataset.energy_unit)
    labels = (keys.ENERGY, keys.FORCES)
    pool = read_structures(dataset.train_file, labels, spec)
    train_indices, valid_indices = split_indices(len(pool), dataset.valid_fraction, seed)
    train = [pool[i] for i in train_indices][:train_limit]
    valid = [pool[i] for i in valid_indices][:train_limit]
    test = read_structures(dataset.test_file, labels, spec)[:test_limit]
    # Isolated-atom files are extxyz in eV whatever the unit of the dataset.
    isolated = read_structures(dataset.isolated_atoms_file, (keys.ENERGY,), LabelSpec())
    elements = sorted({int(z) for structure in train for z in structure.atoms.numbers})
    e0 = {int(s.atoms.numbers[0]): float(s.labels[keys.ENERGY]) for s in isolated}
    e0 = {number: energy for number, energy in e0.items() if number in elements}
    missing = [z for z in elements if z not in e0]
    if missing:
        raise ValueError(f"{dataset.isolated_atoms_file}: no isolated-atom energy for atomic numbers {missing}")

    prepared = PreparedDataset(
        name=dataset.name,
        folder=folder,
        train=folder / "train.xyz",
        valid=folder / "valid.xyz",
        test=folder / "test.xyz",
        isolated_atoms=folder / "isolated_atoms.xyz",
        reference=folder / "reference.npz",
        e0=e0,
        counts={"train": len(train), "valid": len(valid), "test": len(test)},
    )
    _write(prepared.train, train)
    _write(prepared.valid, valid)
    _write(prepared.test, test)
    _write_isolated(prepared.isolated_atoms, e0)
    np.savez(
        prepared.reference,
        energy=np.array([float(s.labels[keys.ENERGY]) for s in test]),
        forces=np.concatenate([s.labels[keys.FORCES] for s in test]),
        num_atoms=np.array([len(s.atoms) for s in test]),
    )
    return prepared


def _write(path: Path, structures: list[Structure]) -> None:
    frames = []
    for structure in structures:
        atoms = ase.Atoms(numbers=structure.atoms.numbers, positions=structure.atoms.positions, pbc=False)
        atoms.info[ENERGY_KEY] = float(structure.labels[keys.ENERGY])
        atoms.arrays[FORCES_KEY] = np.asarray(structure.labels[keys.FORCES], dtype=np.float64)
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def _write_isolated(path: Path, e0: dict[int, float]) -> None:
    frames = []
    for number, energy in sorted(e0.items()):
        atoms = ase.Atoms(numbers=[number], positions=[[0.0, 0.0, 0.0]], pbc=False)
        atoms.info[ENERGY_KEY] = energy
        atoms.info["config_type"] = "IsolatedAtom"
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def score_predictions(reference_path: Path, predictions_path: Path) -> dict[str, float]:
    """Return MAE and RMSE of test energies (meV, meV/atom) and force components (meV/Å).

    ``predictions_path`` is an npz with ``energy`` (frames,) eV and ``forces`` (atoms, 3) eV/Å
    in the order of the test file, as the predict worker writes it.
    """
    reference = np.load(reference_path)
    predicted = np.load(predictions_path)
    if predicted["energy"].shape != reference["energy"].shape or predicted["forces"].shape != reference["forces"].shape:
        raise ValueError(
            f"{predictions_path}: prediction shapes {predicted['energy'].shape}, {predicted['forces'].shape} "
            f"differ from the reference {reference['energy'].shape}, {reference['forces'].shape}"
        )
    energy_error = 1000.0 * (predicted["energy"] - reference["energy"])
    per_atom_error = energy_error / reference["num_atoms"]
    force_error = 1000.0 * (predicted["forces"] - reference["forces"]).reshape(-1)
    return {
        "energy_mae_meV": float(np.mean(np.abs(energy_error))),
        "energy_rmse_meV": float(np.sqrt(np.mean(energy_error**2))),
        "energy_per_atom_mae_meV": float(np.mean(np.abs(per_atom_error))),
        "forces_mae_meV_per_A": float(np.mean(np.abs(force_error))),
        "forces_rmse_meV_per_A": float(np.sqrt(np.mean(force_error**2))),
        "test_frames": int(len(reference["energy"])),
    }
