"""Training runs end to end: checkpoints, bitwise resume, fine-tuning and DDP on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
import torch

from mlpot.config import Config
from mlpot.fileio import safe_torch_load
from mlpot.models.io import load_model
from mlpot.training.run import train

REPOSITORY = Path(__file__).resolve().parents[1]
ETHANOL = REPOSITORY / "data" / "ethanol" / "train.xyz"
ETHANOL_ISOLATED = REPOSITORY / "data" / "ethanol" / "isolated_atoms.xyz"


@pytest.fixture(scope="module")
def ethanol_files(tmp_path_factory) -> tuple[Path, Path]:
    """40 training and 8 validation ethanol structures, so that epochs take a second."""
    folder = tmp_path_factory.mktemp("ethanol")
    frames = ase.io.read(ETHANOL, index=":48")
    train_path, valid_path = folder / "train.xyz", folder / "valid.xyz"
    ase.io.write(train_path, frames[:40])
    ase.io.write(valid_path, frames[40:])
    return train_path, valid_path


def small_config(train_path: Path, valid_path: Path, output: Path, epochs: int, dtype: str = "float64") -> Config:
    config = Config()
    config.data.train_file = str(train_path)
    config.data.valid_file = str(valid_path)
    config.data.isolated_atoms_file = str(ETHANOL_ISOLATED)
    config.data.batch_size = 4
    config.model.num_features = 16
    config.model.radial_hidden = 16
    config.model.num_interactions = 2
    config.model.dtype = dtype
    config.training.output = str(output)
    config.training.max_epochs = epochs
    config.training.progress_bar = False
    config.training.device = "cpu"
    return config


def checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    checkpoint = safe_torch_load(folder / "checkpoints" / "last.ckpt")
    tensors = dict(checkpoint["state_dict"])
    for index, state in enumerate(checkpoint["optimizer_states"][0]["state"].values()):
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value
    return tensors


def test_training_writes_model_and_checkpoints(ethanol_files, tmp_path):
    output = tmp_path / "run"
    model_path = train(small_config(*ethanol_files, output, epochs=2))

    assert model_path == output / "model.pt"
    assert model_path.is_file()
    assert (output / "checkpoints" / "last.ckpt").is_file()
    assert (output / "checkpoints" / "best.ckpt").is_file()
    assert (output / "config.yaml").is_file()
    assert (output / "logs" / "metrics.csv").is_file()
    model = load_model(model_path)
    assert model.elements == [1, 6, 7, 8]  # N comes from the isolated-atom file


def test_resume_matches_uninterrupted_run(ethanol_files, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(small_config(*ethanol_files, straight, epochs=4))
    train(small_config(*ethanol_files, interrupted, epochs=2))
    resumed_config = small_config(*ethanol_files, interrupted, epochs=4)
    train(resumed_config, resume=interrupted)

    expected = checkpoint_tensors(straight)
    resumed = checkpoint_tensors(interrupted)
    assert sorted(expected) == sorted(resumed)
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), f"{name} differs after resuming"
    # The EMA weights are part of the state dict and are compared above; check they exist.
    assert any(name.startswith("ema.") for name in expected)


def test_same_seed_gives_identical_weights(ethanol_files, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(small_config(*ethanol_files, first, epochs=1))
    train(small_config(*ethanol_files, second, epochs=1))

    a, b = checkpoint_tensors(first), checkpoint_tensors(second)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between two runs with one seed"


def test_existing_run_folder_is_not_overwritten(ethanol_files, tmp_path):
    from mlpot.errors import ConfigError

    output = tmp_path / "run"
    train(small_config(*ethanol_files, output, epochs=1))
    with pytest.raises(ConfigError, match="--resume"):
        train(small_config(*ethanol_files, output, epochs=1))


def test_fine_tuning_starts_from_model_weights(ethanol_files, tmp_path):
    base = train(small_config(*ethanol_files, tmp_path / "base", epochs=1))
    config = small_config(*ethanol_files, tmp_path / "tuned", epochs=1)
    config.training.init_from = str(base)
    config.training.learning_rate = 0.0  # with no update, the tuned model must equal its start
    config.training.ema_decay = 0.0
    tuned = train(config)

    start, end = load_model(base).state_dict(), load_model(tuned).state_dict()
    for name in start:
        assert torch.equal(start[name], end[name]), f"{name} did not come from the initial model"


@pytest.mark.slow
def test_ddp_two_processes_match_one(ethanol_files, tmp_path):
    """Two gloo processes with batch 4 each see the same batches as one process with batch 8.

    Every ethanol structure has 9 atoms, so the mean of the two processes' losses equals the
    single-process loss and the trained weights agree to rounding. The validation metrics must
    agree to 1e-6 relative in float64.
    """
    train_path, valid_path = ethanol_files
    common = [
        sys.executable, "-m", "mlpot.cli.main", "train",
        "--train-file", str(train_path), "--valid-file", str(valid_path),
        "--isolated-atoms-file", str(ETHANOL_ISOLATED),
        "--num-features", "16", "--radial-hidden", "16", "--num-interactions", "2",
        "--dtype", "float64", "--max-epochs", "2", "--device", "cpu", "--progress-bar", "false",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    environment.pop("MLPOT_RUN_FOLDER", None)
    runs = {}
    for devices, batch in ((1, 8), (2, 4)):
        output = tmp_path / f"devices{devices}"
        command = common + ["--devices", str(devices), "--batch-size", str(batch), "--output", str(output)]
        result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[devices] = output

    import csv

    def last_validation(folder: Path) -> dict[str, float]:
        with open(folder / "logs" / "metrics.csv") as stream:
            rows = [row for row in csv.DictReader(stream) if row.get("val_loss")]
        return {key: float(value) for key, value in rows[-1].items() if key.startswith("val") and value}

    single, double = last_validation(runs[1]), last_validation(runs[2])
    assert "val_forces_mae_meV_per_A" in single
    for name, value in single.items():
        assert double[name] == pytest.approx(value, rel=1e-6), name


def test_isolated_atoms_keep_their_own_unit():
    """rMD17 energies in kcal/mol must not rescale the eV isolated-atom energies."""
    from mlpot.config import load_config
    from mlpot.models.statistics import compute_statistics
    from mlpot.training.datasets import read_splits

    config = load_config(REPOSITORY / "data" / "configs" / "rmd17_ethanol.yaml")
    assert config.data.energy_unit == "kcal/mol"
    train, _, _, isolated = read_splits(config)
    statistics = compute_statistics(train, config.model.cutoff, isolated)

    hydrogen = statistics.reference_energies[statistics.elements.index(1)]
    assert hydrogen == pytest.approx(-13.5684, abs=1e-3)  # eV, as in data/ethanol/isolated_atoms.xyz
    # The training energies are in eV after conversion: about -4209 eV per ethanol.
    assert float(train[0].labels["energy"]) == pytest.approx(-4209, abs=5)


def test_optimiser_matches_help():
    from mlpot.config import ModelConfig, TrainingConfig, fields_by_key
    from mlpot.models.potential import Potential
    from mlpot.training.module import PotentialModule

    potential = Potential(ModelConfig(num_features=8, radial_hidden=8, num_interactions=1), [1, 8], [-13.6, -2040.0])
    module = PotentialModule(potential, TrainingConfig(), ["energy"], steps_per_epoch=4)
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["amsgrad"] is True
    help_text = fields_by_key()["learning_rate"][1].metadata["help"]
    assert "AdamW" in help_text
    assert "AMSGrad" in help_text


def test_warmup_starts_at_rate_over_steps():
    """Over n = 4 warm-up steps the rate is learning_rate·(k+1)/n, as the help of warmup_epochs states."""
    from types import SimpleNamespace

    from mlpot.config import ModelConfig, TrainingConfig, fields_by_key
    from mlpot.models.potential import Potential
    from mlpot.training.module import PotentialModule

    potential = Potential(ModelConfig(num_features=8, radial_hidden=8, num_interactions=1), [1, 8], [-13.6, -2040.0])
    config = TrainingConfig(learning_rate=0.02, warmup_epochs=1.0)
    module = PotentialModule(potential, config, ["energy"], steps_per_epoch=4)
    optimizer = module.configure_optimizers()
    rates = []
    for step in range(6):
        module._trainer = SimpleNamespace(global_step=step)
        module.optimizer_step(0, step, optimizer)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02, 0.02])
    help_text = fields_by_key()["warmup_epochs"][1].metadata["help"]
    assert "learning_rate/n" in help_text
    assert "from zero" not in help_text
