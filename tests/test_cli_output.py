"""What ``mlpot evaluate``, ``predict`` and ``md`` print: label reports, counts, devices and plain-ASCII consoles.

Like tests/test_cli_errors.py, every case runs ``python -m mlpot.cli.main`` in a subprocess with
an untrained H/C/O model, since only the printed text matters.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from test_cli_errors import ETHANOL, assert_user_error, error_line, run_cli

from mlpot.config import ModelConfig
from mlpot.models.io import save_model
from mlpot.models.potential import Potential


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with an untrained model, three ethanol frames, and the same frames with xtb_ keys and a dipole."""
    folder = tmp_path_factory.mktemp("cli_output")
    frames = ase.io.read(ETHANOL, index=":3")
    ase.io.write(folder / "ethanol.xyz", frames)
    renamed = []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = None
        atoms.info["xtb_energy"] = frame.get_potential_energy()
        atoms.arrays["xtb_forces"] = frame.get_forces()
        atoms.info["dipole"] = np.array([0.1, 0.2, 0.3])
        renamed.append(atoms)
    ase.io.write(folder / "xtb.xyz", renamed)
    config = ModelConfig(num_features=8, radial_hidden=8, num_interactions=1, dtype="float64")
    save_model(Potential(config, [1, 6, 8], [-13.6, -1025.3, -2035.6]), folder / "model.pt")
    return folder


# Which labels evaluate compares


def test_evaluate_names_labels_not_found(files):
    result = run_cli("evaluate", "model.pt", "xtb.xyz", "--no-plots", cwd=files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not found in the first structure: energy (key 'energy'), forces (key 'forces')" in result.stdout
    assert "set --energy-key, --forces-key, --stress-key" in result.stdout
    assert "xtb_energy, xtb_forces" in result.stdout


def test_evaluate_explains_skipped_dipole(files):
    result = run_cli("evaluate", "model.pt", "xtb.xyz", "--no-plots", cwd=files)
    assert "not compared: dipole (key 'dipole') is in the file, but the model has no dipole head" in result.stdout


def test_evaluate_names_compared_keys(files):
    arguments = ["--energy-key", "xtb_energy", "--forces-key", "xtb_forces", "--no-plots"]
    result = run_cli("evaluate", "model.pt", "xtb.xyz", *arguments, cwd=files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compared: energy (key 'xtb_energy'), forces (key 'xtb_forces')" in result.stdout
    assert "energy_per_atom" in result.stdout


def test_evaluate_missing_label_advice(files):
    result = run_cli("evaluate", "model.pt", "xtb.xyz", "--labels", "energy,forces", "--no-plots", cwd=files)
    assert_user_error(result, "xtb.xyz, frame 0", "label 'energy' (energy) is missing", "Set --energy-key")
    assert "--labels forces" in error_line(result)
    assert "to train on" not in error_line(result)


# Counts


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_one_structure_is_singular(files, tmp_path, command):
    ase.io.write(tmp_path / "one.xyz", ase.io.read(files / "ethanol.xyz", index=0))
    arguments = [command, "model.pt", str(tmp_path / "one.xyz"), "--no-plots"]
    if command == "predict":
        arguments = [command, "model.pt", str(tmp_path / "one.xyz"), "-o", str(tmp_path / "out.extxyz")]
    result = run_cli(*arguments, cwd=files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 structure " in result.stdout
    assert "1 structures" not in result.stdout


# Devices


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_misspelt_device(files, tmp_path, command):
    arguments = [command, "model.pt", "ethanol.xyz", "--device", "cdua"]
    if command == "predict":
        arguments += ["-o", str(tmp_path / "out.extxyz")]
    result = run_cli(*arguments, cwd=files)
    assert_user_error(result, "device 'cdua' is not a torch device", "use cpu, cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no CUDA GPU")
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_cuda_without_gpu(files, tmp_path, command):
    arguments = [command, "model.pt", "ethanol.xyz", "--device", "cuda"]
    if command == "predict":
        arguments += ["-o", str(tmp_path / "out.extxyz")]
    result = run_cli(*arguments, cwd=files)
    assert_user_error(result, "device 'cuda' requested", "use cpu")


# Consoles that cannot encode Å or μ


def test_evaluate_on_ascii_console(files):
    result = run_cli("evaluate", "model.pt", "ethanol.xyz", "--no-plots", cwd=files, encoding="ascii")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "meV/?" in result.stdout


def test_md_error_on_ascii_console(files):
    # The error message reads "skin must be 0 Å or more", and main() prints it after md has run.
    result = run_cli("md", "model.pt", "ethanol.xyz", "--skin", "-1", "--no-progress", cwd=files, encoding="ascii")
    assert_user_error(result, "skin must be 0 ? or more")


@pytest.mark.parametrize("command", ["train", "evaluate", "md"])
def test_help_on_ascii_console(files, command):
    # The help of unit options names Å, which an ASCII stdout cannot encode.
    result = run_cli(command, "--help", cwd=files, encoding="ascii")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "?" in result.stdout
