"""Edge cases of training and prediction: one-atom structures, batch sizes, order and seeds."""

from __future__ import annotations

from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import torch

from mlpot import keys
from mlpot.config import Config
from mlpot.data.graph import collate, structure_to_graph
from mlpot.data.io import read_structures
from mlpot.evaluation import predict
from mlpot.fileio import safe_torch_load
from mlpot.models.io import load_model
from mlpot.training.module import PotentialModule
from mlpot.training.run import train

REPOSITORY = Path(__file__).resolve().parents[1]
ETHANOL = REPOSITORY / "data" / "ethanol" / "train.xyz"
ETHANOL_ISOLATED = REPOSITORY / "data" / "ethanol" / "isolated_atoms.xyz"


def labelled(atoms: ase.Atoms, energy: float, forces: np.ndarray) -> ase.Atoms:
    atoms.calc = None
    atoms.info["energy"] = energy
    atoms.arrays["forces"] = np.asarray(forces, dtype=float)
    return atoms


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory) -> Path:
    """Twelve ethanol structures mixed with one-atom H, C and O and an H-O pair 12 Å apart.

    The pair has no neighbours within the 5 Å cutoff, so both its atoms are isolated. The last
    structure of the file is a one-atom O.
    """
    folder = tmp_path_factory.mktemp("mixed")
    references = {atoms.get_chemical_symbols()[0]: atoms.get_potential_energy() for atoms in ase.io.read(ETHANOL_ISOLATED, ":")}
    ethanol = [labelled(a, a.get_potential_energy(), a.get_forces()) for a in ase.io.read(ETHANOL, index=":12")]
    singles = [labelled(ase.Atoms(symbol, positions=[[0.0, 0.0, 0.0]]), references[symbol], np.zeros((1, 3))) for symbol in "HCO"]
    pair = ase.Atoms("HO", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 12.0]])
    pair = labelled(pair, references["H"] + references["O"], np.zeros((2, 3)))
    path = folder / "mixed.xyz"
    ase.io.write(path, ethanol[:6] + singles[:2] + [pair] + ethanol[6:] + singles[2:])
    return path


def small_config(train_file: Path, output: Path, dtype: str = "float64", batch_size: int = 4) -> Config:
    config = Config()
    config.data.train_file = str(train_file)
    config.data.valid_file = str(train_file)
    config.data.batch_size = batch_size
    config.data.eval_batch_size = 5
    config.model.num_features = 8
    config.model.radial_hidden = 8
    config.model.num_interactions = 1
    config.model.dtype = dtype
    config.training.output = str(output)
    config.training.max_epochs = 1
    config.training.progress_bar = False
    config.training.device = "cpu"
    return config


@pytest.fixture(scope="module")
def trained_on_mixed(mixed_file, tmp_path_factory) -> Path:
    """A model trained for one epoch, one structure per batch, on the mixed file."""
    output = tmp_path_factory.mktemp("mixed_run") / "run"
    return train(small_config(mixed_file, output, batch_size=1))


def test_batch_size_one_with_single_atoms(trained_on_mixed, mixed_file):
    model = load_model(trained_on_mixed)
    structures = read_structures(mixed_file)
    predictions, _ = predict(model, structures, batch_size=len(structures))
    assert model.elements == [1, 6, 8]
    for structure, predicted in zip(structures, predictions):
        assert np.isfinite(predicted[keys.ENERGY]), structure.where
        assert np.isfinite(predicted[keys.FORCES]).all(), structure.where


def has_no_neighbours(atoms: ase.Atoms, cutoff: float) -> bool:
    distances = atoms.get_all_distances()
    return bool((distances[~np.eye(len(atoms), dtype=bool)] > cutoff).all())


def test_isolated_atoms_feel_no_force(trained_on_mixed, mixed_file):
    structures = read_structures(mixed_file)
    predictions, _ = predict(load_model(trained_on_mixed), structures, batch_size=4)
    isolated = [p for s, p in zip(structures, predictions) if has_no_neighbours(s.atoms, 5.0)]
    assert len(isolated) == 4
    for predicted in isolated:
        assert np.array_equal(predicted[keys.FORCES], np.zeros_like(predicted[keys.FORCES]))


def test_loss_backward_when_last_is_single_atom(trained_on_mixed, mixed_file):
    # The batch ends with the one-atom O; its loss must reach every trained parameter.
    structures = read_structures(mixed_file)
    potential = load_model(trained_on_mixed).train()
    for parameter in potential.parameters():
        parameter.requires_grad_(True)
    config = small_config(mixed_file, Path("unused"))
    module = PotentialModule(potential, config.training, config.data.labels, steps_per_epoch=1)
    batch = collate([structure_to_graph(s, potential.cutoff) for s in structures[-3:]])
    assert int(batch[keys.NUM_ATOMS][-1]) == 1
    loss = module.loss(module._predict(potential, batch, training=True), batch)
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in potential.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("batch_size", [1, 3])
def test_predictions_independent_of_batch_size(trained_on_mixed, mixed_file, batch_size):
    model = load_model(trained_on_mixed)
    structures = read_structures(mixed_file)
    reference, _ = predict(model, structures, batch_size=len(structures))
    predictions, _ = predict(model, structures, batch_size=batch_size)
    for structure, expected, actual in zip(structures, reference, predictions):
        np.testing.assert_allclose(actual[keys.ENERGY], expected[keys.ENERGY], rtol=1e-13, atol=0, err_msg=structure.where)
        np.testing.assert_allclose(actual[keys.FORCES], expected[keys.FORCES], rtol=0, atol=1e-12, err_msg=structure.where)


def test_predictions_independent_of_order(trained_on_mixed, mixed_file):
    model = load_model(trained_on_mixed)
    structures = read_structures(mixed_file)
    order = np.random.default_rng(5).permutation(len(structures))
    reference, _ = predict(model, structures, batch_size=3)
    shuffled, _ = predict(model, [structures[i] for i in order], batch_size=3)
    for position, index in enumerate(order):
        where = structures[index].where
        expected, actual = reference[index], shuffled[position]
        np.testing.assert_allclose(actual[keys.ENERGY], expected[keys.ENERGY], rtol=1e-13, atol=0, err_msg=where)
        np.testing.assert_allclose(actual[keys.FORCES], expected[keys.FORCES], rtol=0, atol=1e-12, err_msg=where)


def test_same_seed_float32_identical(tmp_path):
    # The float64 case is in test_training.py; float32 rounds differently but must repeat too.
    data = tmp_path / "ethanol.xyz"
    ase.io.write(data, ase.io.read(ETHANOL, index=":24"))
    runs = []
    for name in ("first", "second"):
        config = small_config(data, tmp_path / name, dtype="float32")
        config.data.isolated_atoms_file = str(ETHANOL_ISOLATED)
        train(config)
        runs.append(safe_torch_load(tmp_path / name / "checkpoints" / "last.ckpt")["state_dict"])
    first, second = runs
    assert first["potential.interaction_shifts"].dtype == torch.float32
    assert sorted(first) == sorted(second)
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs between two runs with one seed"
