"""The mlpot command line: train, evaluate and predict on real files, and its error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from mlpot.cli.main import main
from mlpot.models.io import load_model

REPOSITORY = Path(__file__).resolve().parents[1]
ETHANOL = REPOSITORY / "data" / "ethanol" / "train.xyz"
ISOLATED = REPOSITORY / "data" / "ethanol" / "isolated_atoms.xyz"

TINY_MODEL = ["--num-features", "8", "--radial-hidden", "8", "--num-interactions", "1", "--progress-bar", "false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A model trained for one epoch from the command line, and its 24 ethanol structures."""
    folder = tmp_path_factory.mktemp("cli")
    data = folder / "ethanol.xyz"
    ase.io.write(data, ase.io.read(ETHANOL, index=":24"))
    arguments = ["train", "--train-file", str(data), "--isolated-atoms-file", str(ISOLATED)]
    arguments += ["--max-epochs", "1", "--output", str(folder / "run"), "--device", "cpu", *TINY_MODEL]
    assert main(arguments) == 0
    return folder / "run" / "model.pt", data


def test_train_prints_model_path(trained, capsys):
    model_path, _ = trained
    assert model_path.is_file()


def test_evaluate_prints_errors_with_units(trained, capsys, tmp_path):
    model_path, data = trained
    assert main(["evaluate", str(model_path), str(data), "--plots", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert "meV/atom" in output
    assert "meV/Å" in output
    assert (tmp_path / "parity_energy.png").stat().st_size > 1000
    assert (tmp_path / "parity_forces.png").stat().st_size > 1000


def test_evaluate_reads_rmd17_npz_with_units(trained, capsys):
    model_path, _ = trained
    npz = REPOSITORY / "data" / "rmd17" / "rmd17_ethanol_test_01.npz"
    arguments = ["evaluate", str(model_path), str(npz), "--energy-unit", "kcal/mol", "--no-plots"]
    assert main(arguments) == 0
    assert "1000 structures" in capsys.readouterr().out


def test_predict_writes_extxyz_that_ase_reads(trained, tmp_path):
    model_path, data = trained
    output = tmp_path / "predicted.extxyz"
    assert main(["predict", str(model_path), str(data), "-o", str(output)]) == 0

    frames = ase.io.read(output, index=":")
    model = load_model(model_path)
    assert len(frames) == 24
    assert np.isfinite(frames[0].info["mlpot_energy"])
    assert frames[0].arrays["mlpot_forces"].shape == (9, 3)
    from mlpot.calculator import MLPotCalculator

    atoms = frames[3].copy()
    atoms.calc = MLPotCalculator(model)
    assert atoms.get_potential_energy() == pytest.approx(frames[3].info["mlpot_energy"], abs=1e-4)


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlpot.cli.main", *arguments], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "absent.yaml"], "config file absent.yaml not found"),
        (["train", "--train-file", "absent.xyz"], "absent.xyz: file not found"),
        (["train", "--train-file", str(ETHANOL), "--num-features", "many"], "expects int"),
        (["train", "--train-file", str(ETHANOL), "--energy-unit", "furlongs"], "unknown energy unit 'furlongs'"),
        (["evaluate", "absent.pt", str(ETHANOL)], "model file absent.pt not found"),
    ],
)
def test_user_errors_exit_with_message(arguments, message):
    result = run_cli(*arguments)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_flag_shows_traceback():
    result = run_cli("--debug", "train", "absent.yaml")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
