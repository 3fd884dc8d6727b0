"""Tests of MD, optimisation and vibrations through ASE with MLPotCalculator, and of ``mlpot md``."""

from __future__ import annotations

import warnings
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.units import fs
from ase.vibrations import Vibrations

from mlpot import keys
from mlpot.calculator import MLPotCalculator
from mlpot.cli.main import main
from mlpot.config import ModelConfig
from mlpot.data.graph import atoms_to_graph, collate, structure_to_graph
from mlpot.data.io import read_structures
from mlpot.data.neighbours import neighbour_list
from mlpot.errors import ConfigError
from mlpot.md import MDSettings, initialise_velocities, read_log, run_md
from mlpot.models.io import save_model
from mlpot.models.potential import Potential
from mlpot.models.statistics import compute_statistics

DATA = Path(__file__).resolve().parents[1] / "data" / "acetylacetone"
ELEMENTS = [1, 6, 8]
REFERENCES = [-13.5, -1026.8, -2037.8]


def make_potential(dtype: str = "float64", dipole: bool = False, energy_scale: float = 1.0) -> Potential:
    """Build a small untrained potential for H, C and O with a smooth, arbitrary energy surface."""
    torch.manual_seed(0)
    config = ModelConfig(
        num_features=16,
        radial_hidden=16,
        num_interactions=2,
        lmax=2,
        cutoff=4.0,
        dtype=dtype,
        dipole=dipole,
        dipole_features=4,
        dipole_layers=1,
    )
    return Potential(config, ELEMENTS, REFERENCES, energy_scale=energy_scale, avg_num_neighbours=8.0)


def molecule(index: int = 0) -> ase.Atoms:
    atoms = ase.io.read(DATA / "train_300K.xyz", index=index)
    atoms.calc = None
    return atoms


def random_periodic(seed: int, num_atoms: int = 8, length: float = 5.0) -> ase.Atoms:
    """Random H, C, O atoms in a skewed cell, no two (images included) closer than 1 Å."""
    rng = np.random.default_rng(seed)
    cell = length * np.eye(3) + rng.uniform(-0.5, 0.5, (3, 3))
    while True:
        atoms = ase.Atoms(
            numbers=rng.choice(ELEMENTS, num_atoms),
            scaled_positions=rng.uniform(0, 1, (num_atoms, 3)),
            cell=cell,
            pbc=True,
        )
        edges, _ = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 1.0)
        if edges.shape[1] == 0:
            return atoms


def train_acetylacetone(steps: int = 1000, seed: int = 0) -> Potential:
    """Fit a small float32 potential to the forces and energies of acetylacetone at 300 K.

    Plain Adam on batches of 8 structures with a cosine learning-rate decay; the reference
    energies come from the isolated atoms. 1000 steps take under a minute on one CPU thread and
    give force errors near 65 meV/Å (MAE) on test_MD_300K.xyz: a bound molecule whose MD at
    300 K stays near 300 K. With 300 steps the model has holes that MD falls into.
    """
    torch.manual_seed(seed)
    structures = read_structures(DATA / "train_300K.xyz")
    config = ModelConfig(num_features=32, radial_hidden=32, num_interactions=2, lmax=2, cutoff=4.0, dtype="float32")
    statistics = compute_statistics(structures, config.cutoff, DATA / "isolated_atoms.xyz")
    potential = Potential(
        config,
        statistics.elements,
        statistics.reference_energies,
        statistics.energy_scale,
        statistics.avg_num_neighbours,
        statistics.interaction_shifts,
    )
    graphs = [structure_to_graph(structure, config.cutoff) for structure in structures]
    optimiser = torch.optim.Adam(potential.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = collate([graphs[i] for i in rng.choice(len(graphs), 8, replace=False)])
        outputs = potential(batch, compute_forces=True, create_graph=True)
        force_error = (outputs[keys.FORCES] - batch[keys.FORCES].float()).pow(2).mean()
        energy_error = ((outputs[keys.ENERGY] - batch[keys.ENERGY]) / batch[keys.NUM_ATOMS]).pow(2).mean()
        loss = force_error + 0.1 * energy_error
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return potential.eval()


@pytest.fixture(scope="session")
def trained_potential() -> Potential:
    # Session fixtures start before the module's single_thread fixture, so this one sets its own.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_acetylacetone()
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run torch on one thread: these graphs are small, and several threads slow down badly on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def count_calls(calculator: MLPotCalculator) -> list[int]:
    calls = [0]
    calculator.model.register_forward_hook(lambda module, inputs, outputs: calls.__setitem__(0, calls[0] + 1))
    return calls


# ASE dynamics, optimisers and vibrations


def _verlet_energy_error(timestep: float, duration: float) -> tuple[float, int, MLPotCalculator]:
    """Run velocity Verlet from 300 K and return the largest total-energy deviation (eV) and the model calls."""
    atoms = molecule()
    calculator = MLPotCalculator(make_potential(), skin=1.0)
    calls = count_calls(calculator)
    atoms.calc = calculator
    initialise_velocities(atoms, temperature=300.0, seed=0)
    initial = atoms.get_total_energy()
    dynamics = VelocityVerlet(atoms, timestep=timestep * fs)
    deviations = []
    dynamics.attach(lambda: deviations.append(abs(atoms.get_total_energy() - initial)))
    dynamics.run(round(duration / timestep))
    return max(deviations), calls[0], calculator


def test_velocity_verlet_conserves_energy():
    # The untrained energy surface is stiff (forces of several eV/Å), so the steps are short.
    coarse, calls, calculator = _verlet_energy_error(timestep=0.25, duration=25.0)
    fine, _, _ = _verlet_energy_error(timestep=0.125, duration=25.0)
    assert coarse < 0.05
    # Velocity Verlet's energy error scales with the square of the time step when forces are -dE/dr.
    assert 2.5 < coarse / fine < 6.0
    assert calls == 101
    assert calculator.neighbour_list_builds < 10


def test_skin_leaves_trajectory_unchanged():
    final_positions = []
    for skin in (0.0, 1.0):
        atoms = molecule()
        atoms.calc = MLPotCalculator(make_potential(), skin=skin)
        run_md(atoms, MDSettings(ensemble="nve", temperature=600.0, timestep=0.5, steps=60, interval=60))
        final_positions.append(atoms.positions.copy())
    np.testing.assert_allclose(final_positions[0], final_positions[1], rtol=0, atol=1e-9)


def test_langevin_heats_to_target():
    atoms = molecule()
    atoms.calc = MLPotCalculator(make_potential(), skin=1.0)
    atoms.set_momenta(np.zeros((len(atoms), 3)))
    rng = np.random.default_rng(0)
    dynamics = Langevin(atoms, timestep=1.0 * fs, temperature_K=300.0, friction=0.05 / fs, fixcm=False, rng=rng)
    temperatures = []
    dynamics.attach(lambda: temperatures.append(atoms.get_temperature()), interval=5)
    dynamics.run(400)
    assert temperatures[0] == 0.0
    assert 150.0 < np.mean(temperatures[len(temperatures) // 2 :]) < 450.0


def test_langevin_seed_reproducible():
    final = {}
    for name, seed in (("first", 3), ("again", 3), ("other", 4)):
        atoms = molecule()
        atoms.calc = MLPotCalculator(make_potential())
        run_md(atoms, MDSettings(ensemble="nvt", steps=20, interval=20, friction=0.05, seed=seed))
        final[name] = atoms.positions.copy()
    np.testing.assert_array_equal(final["first"], final["again"])
    assert np.abs(final["first"] - final["other"]).max() > 1e-6


def test_bfgs_relaxes_molecule():
    atoms = molecule()
    atoms.calc = MLPotCalculator(make_potential())
    initial_energy = atoms.get_potential_energy()
    assert np.abs(atoms.get_forces()).max() > 0.1
    converged = BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    assert converged
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05
    assert atoms.get_potential_energy() < initial_energy


def test_cell_filter_gradient_matches_energy():
    """The filter's generalised forces, built from our forces and stress, are -dE/dx of the filter."""
    atoms = random_periodic(0)
    atoms.calc = MLPotCalculator(make_potential(), skin=0.5)
    cell_filter = FrechetCellFilter(atoms)
    start = cell_filter.get_positions()
    gradient = -cell_filter.get_forces()
    eps = 1e-5
    for row in (0, len(start) - 3, len(start) - 2, len(start) - 1):
        for column in range(3):
            energies = []
            for sign in (1.0, -1.0):
                moved = start.copy()
                moved[row, column] += sign * eps
                cell_filter.set_positions(moved)
                energies.append(cell_filter.get_potential_energy())
            numerical = (energies[0] - energies[1]) / (2 * eps)
            assert numerical == pytest.approx(gradient[row, column], rel=1e-6, abs=1e-6)


def test_bfgs_with_cell_filter_lowers_energy():
    atoms = random_periodic(1)
    calculator = MLPotCalculator(make_potential(), skin=0.5)
    atoms.calc = calculator
    initial_energy = atoms.get_potential_energy()
    initial_cell = atoms.cell.array.copy()
    optimiser = BFGS(FrechetCellFilter(atoms), logfile=None, maxstep=0.05)
    energies = []
    optimiser.attach(lambda: energies.append(atoms.get_potential_energy()))
    optimiser.run(fmax=0.01, steps=10)
    assert energies[-1] < initial_energy - 0.1
    assert np.abs(atoms.cell.array - initial_cell).max() > 1e-3
    assert calculator.neighbour_list_builds >= len(energies)


def test_vibrations_hessian_matches_autograd(tmp_path):
    potential = make_potential()
    atoms = molecule()
    atoms.calc = MLPotCalculator(potential)
    # Central differences err by about delta² times the third derivative, which is large on this
    # untrained energy surface, so delta is smaller than ASE's default.
    vibrations = Vibrations(atoms, name=str(tmp_path / "vib"), delta=1e-4)
    vibrations.run()
    hessian = vibrations.get_vibrations().get_hessian_2d()

    graph = atoms_to_graph(atoms, potential.cutoff)

    def forces_of(positions: torch.Tensor) -> torch.Tensor:
        outputs = potential({**graph, keys.POSITIONS: positions}, compute_forces=True, create_graph=True)
        return outputs[keys.FORCES].reshape(-1)

    positions = graph[keys.POSITIONS].clone().requires_grad_(True)
    expected = -torch.autograd.functional.jacobian(forces_of, positions).reshape(3 * len(atoms), -1).detach().numpy()
    scale = np.abs(expected).max()
    assert scale > 0.1
    np.testing.assert_allclose(hessian, expected, rtol=0, atol=1e-5 * scale)
    assert len(vibrations.get_frequencies()) == 3 * len(atoms)


# run_md: trajectory, log and errors


def test_trajectory_and_log_written(tmp_path):
    atoms = molecule()
    atoms.calc = MLPotCalculator(make_potential(dipole=True))
    settings = MDSettings(ensemble="nve", temperature=300.0, timestep=0.5, steps=20, interval=5)
    summary = run_md(atoms, settings, trajectory=tmp_path / "md.extxyz", log=tmp_path / "md.log")
    frames = ase.io.read(tmp_path / "md.extxyz", index=":")
    log = read_log(tmp_path / "md.log")

    assert [frame.info["step"] for frame in frames] == [0, 5, 10, 15, 20]
    np.testing.assert_array_equal(log["step"], [0, 5, 10, 15, 20])
    np.testing.assert_allclose(log["time_fs"], 0.5 * log["step"])
    np.testing.assert_allclose(log["total_eV"], log["potential_eV"] + log["kinetic_eV"], atol=1e-7)
    np.testing.assert_allclose([frame.get_potential_energy() for frame in frames], log["potential_eV"], atol=1e-7)
    assert all(frame.get_forces().shape == (len(atoms), 3) for frame in frames)
    assert all(frame.get_dipole_moment().shape == (3,) for frame in frames)
    assert all(np.abs(frame.get_momenta()).max() > 0.0 for frame in frames)
    np.testing.assert_allclose(frames[-1].positions, atoms.positions, atol=1e-7)
    assert summary.final_total_energy == pytest.approx(log["total_eV"][-1], abs=1e-7)


def test_crash_keeps_written_frames(tmp_path, monkeypatch):
    atoms = molecule()
    calculator = MLPotCalculator(make_potential())
    atoms.calc = calculator
    original = calculator.calculate
    calls = [0]

    def failing_calculate(*args, **kwargs):
        calls[0] += 1
        if calls[0] > 12:
            raise RuntimeError("simulated failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(calculator, "calculate", failing_calculate)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_md(atoms, MDSettings(steps=30, interval=5), trajectory=tmp_path / "md.extxyz", log=tmp_path / "md.log")
    frames = ase.io.read(tmp_path / "md.extxyz", index=":")
    assert [frame.info["step"] for frame in frames] == [0, 5, 10]
    np.testing.assert_array_equal(read_log(tmp_path / "md.log")["step"], [0, 5, 10])


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("timestep", 0.0, "timestep"),
        ("timestep", float("nan"), "timestep"),
        ("temperature", -1.0, "temperature"),
        ("steps", -5, "steps"),
        ("interval", 0, "interval"),
        ("ensemble", "npt", "npt"),
    ],
)
def test_invalid_setting_raises(option, value, message):
    with pytest.raises(ConfigError, match=message):
        MDSettings(**{option: value}).validate()


def test_nvt_needs_positive_friction():
    with pytest.raises(ConfigError, match="friction"):
        MDSettings(ensemble="nvt", friction=0.0).validate()


# mlpot md


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_model(make_potential(dipole=True), tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture
def structure_file(tmp_path) -> Path:
    path = tmp_path / "start.xyz"
    ase.io.write(path, molecule())
    return path


def test_cli_md_writes_outputs(model_file, structure_file, tmp_path):
    trajectory, log = tmp_path / "out" / "md.extxyz", tmp_path / "md.log"
    arguments = ["md", str(model_file), str(structure_file), "--steps", "12", "--interval", "4", "--no-progress"]
    arguments += ["--trajectory", str(trajectory), "--log", str(log), "--ensemble", "nvt", "--friction", "0.02"]
    assert main(arguments) == 0
    frames = ase.io.read(trajectory, index=":")
    assert [frame.info["step"] for frame in frames] == [0, 4, 8, 12]
    assert all("dipole" in frame.calc.results for frame in frames)
    np.testing.assert_array_equal(read_log(log)["step"], [0, 4, 8, 12])


def test_cli_md_float32_warns(model_file, structure_file):
    arguments = ["md", str(model_file), str(structure_file), "--steps", "2", "--dtype", "float32", "--no-progress"]
    with pytest.warns(UserWarning, match="evaluated in float32"):
        assert main(arguments) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--timestep", "0"], "timestep must be more than 0 fs"),
        (["--ensemble", "nvt", "--friction", "-1"], "friction"),
        (["--interval", "0"], "interval"),
        (["--skin", "-0.5"], "skin"),
        (["--threads", "0"], "threads"),
    ],
)
def test_cli_md_bad_value(model_file, structure_file, capsys, extra, message):
    assert main(["md", str(model_file), str(structure_file), "--no-progress", *extra]) == 1
    assert message in capsys.readouterr().err


def test_cli_md_missing_structure(model_file, tmp_path, capsys):
    missing = tmp_path / "absent.xyz"
    assert main(["md", str(model_file), str(missing), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "absent.xyz" in error
    assert "not found" in error


def test_cli_md_missing_model(structure_file, tmp_path, capsys):
    assert main(["md", str(tmp_path / "absent.pt"), str(structure_file), "--no-progress"]) == 1
    assert "absent.pt" in capsys.readouterr().err


def test_cli_md_unknown_element(model_file, tmp_path, capsys):
    atoms = molecule()
    atoms.numbers[0] = 26
    path = tmp_path / "iron.xyz"
    ase.io.write(path, atoms)
    assert main(["md", str(model_file), str(path), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "Fe" in error
    assert "iron.xyz" in error


# Energy conservation of a trained model


@pytest.mark.slow
def test_trained_model_fits_forces(trained_potential):
    from mlpot.evaluation import predict

    structures = read_structures(DATA / "test_MD_300K.xyz", index=slice(0, 100))
    _, errors = predict(trained_potential, structures, batch_size=50)
    assert errors["forces"].unit == "meV/Å"
    assert errors["forces"].mae < 100.0


def _drift(log: dict[str, np.ndarray], num_atoms: int) -> tuple[float, float]:
    """Return the fitted drift (meV/atom/ps) and the max-min spread (meV/atom) of the total energy."""
    time_ps = log["time_fs"] / 1000.0
    total = log["total_eV"] * 1000.0 / num_atoms
    slope = np.polyfit(time_ps, total, 1)[0]
    return float(slope), float(total.max() - total.min())


#: Bounds on |drift| in meV/atom/ps and on the spread in meV/atom over 1 ps, per dtype.
NVE_BOUNDS = {"float64": (0.1, 1.0), "float32": (0.3, 1.0)}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nve_energy_drift(trained_potential, dtype, tmp_path):
    atoms = ase.io.read(DATA / "test_MD_300K.xyz", index=0)
    atoms.calc = None
    with warnings.catch_warnings():
        # The model was trained in float32, so float64 evaluation warns.
        warnings.simplefilter("ignore", UserWarning)
        atoms.calc = MLPotCalculator(trained_potential, dtype=dtype, skin=1.0)
    settings = MDSettings(ensemble="nve", temperature=300.0, timestep=0.5, steps=2000, interval=10, seed=0)
    summary = run_md(atoms, settings, log=tmp_path / "nve.log")
    slope, spread = _drift(read_log(tmp_path / "nve.log"), len(atoms))
    print(
        f"NVE {dtype}: drift {slope:+.4f} meV/atom/ps, spread {spread:.4f} meV/atom, "
        f"mean T {summary.mean_temperature:.1f} K, {summary.milliseconds_per_step:.2f} ms/step"
    )
    max_drift, max_spread = NVE_BOUNDS[dtype]
    assert abs(slope) < max_drift
    assert spread < max_spread
    assert 100.0 < summary.mean_temperature < 600.0
