"""Tests of MD start and finish: exact initial temperature, stability warnings and the output files of ``mlpot md``."""

from __future__ import annotations

import logging
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import torch
from test_md import make_potential, molecule, random_periodic

from mlpot.calculator import MLPotCalculator
from mlpot.cli.main import main
from mlpot.md import MDSettings, MDSummary, initialise_velocities, run_md, stability_warnings
from mlpot.models.io import save_model


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run torch on one thread: these graphs are small, and several threads slow down badly on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Initial velocities


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("temperature", [10.0, 300.0, 3000.0])
def test_initial_temperature_is_target(seed, temperature):
    atoms = molecule()
    initialise_velocities(atoms, temperature, seed)
    assert atoms.get_temperature() == pytest.approx(temperature, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_initial_velocities_lose_drift_and_rotation(seed):
    atoms = molecule()
    initialise_velocities(atoms, 300.0, seed)
    scale = np.abs(atoms.get_momenta()).max()
    assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-10 * scale
    assert np.abs(atoms.get_angular_momentum()).max() < 1e-8 * scale


def test_periodic_initial_temperature_is_target():
    atoms = random_periodic(seed=4)
    initialise_velocities(atoms, 500.0, seed=7)
    assert atoms.get_temperature() == pytest.approx(500.0, rel=1e-12)
    assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-10


def test_single_atom_stays_at_rest():
    atoms = ase.Atoms("H", positions=[[0.0, 0.0, 0.0]])
    initialise_velocities(atoms, 300.0, seed=0)
    assert np.all(atoms.get_momenta() == 0.0)


def test_zero_kelvin_is_at_rest():
    atoms = molecule()
    initialise_velocities(atoms, 0.0, seed=0)
    assert np.all(atoms.get_momenta() == 0.0)


# Stability warnings


def summary_of(mean_temperature: float, energy_change_per_atom: float, num_atoms: int = 10) -> MDSummary:
    """A summary of 1000 steps with the given mean temperature (K) and total-energy change (meV/atom)."""
    return MDSummary(
        steps=1000,
        wall_time=1.0,
        initial_total_energy=-100.0,
        final_total_energy=-100.0 + energy_change_per_atom * num_atoms / 1000.0,
        mean_temperature=mean_temperature,
        initial_temperature=300.0,
        num_atoms=num_atoms,
    )


NVE = MDSettings(ensemble="nve", temperature=300.0, timestep=0.5, steps=1000)
NVT = MDSettings(ensemble="nvt", temperature=300.0, timestep=0.5, steps=1000)


def test_sound_run_has_no_warnings():
    # 0.5 ps of NVE allows 10 * 0.5 + 5 = 10 meV/atom.
    assert stability_warnings(summary_of(310.0, 9.0), NVE) == []


def test_hot_run_warns():
    messages = stability_warnings(summary_of(1000.0, 0.0), NVT)
    assert len(messages) == 1
    assert "mean temperature 1000.0 K" in messages[0]
    assert "--timestep" in messages[0]


def test_energy_jump_warns_in_nve():
    messages = stability_warnings(summary_of(310.0, -11.0), NVE)
    assert len(messages) == 1
    assert "11 meV/atom" in messages[0]
    assert "training data" in messages[0]


def test_energy_jump_ignored_in_nvt():
    assert stability_warnings(summary_of(310.0, 500.0), NVT) == []


def test_zero_kelvin_target_skips_temperature():
    settings = MDSettings(ensemble="nvt", temperature=0.0, steps=1000)
    assert stability_warnings(summary_of(50.0, 0.0), settings) == []


def test_exploding_run_logs_warnings(caplog):
    atoms = molecule()
    atoms.calc = MLPotCalculator(make_potential(), skin=1.0)
    settings = MDSettings(ensemble="nve", temperature=3000.0, timestep=3.0, steps=40, interval=5)
    with caplog.at_level(logging.WARNING, logger="mlpot.md"):
        summary = run_md(atoms, settings)
    assert len(summary.warnings) == 2
    assert [record.getMessage() for record in caplog.records] == summary.warnings


# mlpot md


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_model(make_potential(), tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture
def structure_file(tmp_path) -> Path:
    path = tmp_path / "start.xyz"
    ase.io.write(path, molecule())
    return path


def md_arguments(model_file: Path, structure_file: Path, *extra: str) -> list[str]:
    return ["md", str(model_file), str(structure_file), "--no-progress", *extra]


def test_cli_md_zero_steps(model_file, structure_file, capsys):
    assert main(md_arguments(model_file, structure_file, "--steps", "0")) == 0
    output = capsys.readouterr().out
    assert "nan" not in output
    assert "0 steps run" in output
    assert "initial temperature 300.0 K" in output


def test_cli_md_prints_initial_temperature(model_file, structure_file, capsys):
    assert main(md_arguments(model_file, structure_file, "--steps", "2", "--temperature", "250")) == 0
    assert "initial temperature 250.0 K" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--trajectory", "--log"])
def test_cli_md_keeps_existing_file(model_file, structure_file, tmp_path, capsys, option):
    existing = tmp_path / "existing.out"
    existing.write_text("earlier results\n")
    assert main(md_arguments(model_file, structure_file, "--steps", "2", option, str(existing))) == 1
    error = capsys.readouterr().err
    assert f"{option} {existing} already exists" in error
    assert "--overwrite" in error
    assert existing.read_text() == "earlier results\n"


def test_cli_md_overwrite_replaces_file(model_file, structure_file, tmp_path):
    existing = tmp_path / "md.extxyz"
    existing.write_text("earlier results\n")
    arguments = md_arguments(model_file, structure_file, "--steps", "2", "--trajectory", str(existing), "--overwrite")
    assert main(arguments) == 0
    assert len(ase.io.read(existing, index=":")) == 1


def test_cli_md_same_file_for_both_outputs(model_file, structure_file, tmp_path, capsys):
    path = str(tmp_path / "both.txt")
    assert main(md_arguments(model_file, structure_file, "--trajectory", path, "--log", path)) == 1
    assert "different files" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cdua", "cuda:x"])
def test_cli_md_invalid_device(model_file, structure_file, capsys, device):
    assert main(md_arguments(model_file, structure_file, "--device", device)) == 1
    error = capsys.readouterr().err
    assert f"device '{device}' is not a torch device" in error
    assert "Traceback" not in error
