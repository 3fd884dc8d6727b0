"""Molecular dynamics with an mlpot potential through ASE: NVE (velocity Verlet) or NVT (Langevin).

Trajectory frames and log lines are written as the run goes and flushed after each one, so a
run that crashes or is interrupted keeps everything up to its last frame. Units: time in fs,
temperature in K, energies in eV, friction in 1/fs.

Temperatures are ASE's, ``atoms.get_temperature()``: twice the kinetic energy divided by
k_B times 3 N degrees of freedom (fewer only when ASE constraints remove some). The removed
centre-of-mass motion and rotation are not subtracted from 3 N.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import ase
import ase.io
import numpy as np
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation, force_temperature
from ase.md.verlet import VelocityVerlet
from tqdm import tqdm

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE before 3.29, where MaxwellBoltzmannDistribution is not yet deprecated
    thermalize_momenta = None

from mlpot.errors import ConfigError

logger = logging.getLogger(__name__)

#: Ensembles that :func:`build_dynamics` supports.
ENSEMBLES = ("nve", "nvt")

#: Columns of the log file, in order.
LOG_COLUMNS = ("step", "time_fs", "potential_eV", "kinetic_eV", "total_eV", "temperature_K")

#: A mean temperature above this multiple of the target temperature marks a run as unstable.
MAX_TEMPERATURE_RATIO = 3.0
#: NVE runs whose total energy changes by more than MAX_NVE_DRIFT (meV/atom per ps of simulated
#: time) plus NVE_ENERGY_TOLERANCE (meV/atom) are marked as unstable. Velocity Verlet's total
#: energy oscillates without drifting, with an amplitude that grows with the square of the time
#: step. The tolerance covers that oscillation with room to spare: in tests/test_md.py, a trained
#: acetylacetone model at 0.5 fs must keep its spread below 1 meV/atom and its drift below 0.3
#: meV/atom/ps.
MAX_NVE_DRIFT = 10.0
NVE_ENERGY_TOLERANCE = 5.0


@dataclass
class MDSettings:
    """Options of an MD run.

    Attributes:
        ensemble: ``nve`` (velocity Verlet) or ``nvt`` (Langevin thermostat).
        temperature: temperature of the initial velocities and of the thermostat, in K.
        timestep: integration time step in fs.
        steps: number of time steps.
        friction: Langevin friction coefficient in 1/fs (``nvt`` only).
        interval: steps between trajectory frames and log lines.
        seed: seed of the initial velocities and of the Langevin noise.
    """

    ensemble: str = "nve"
    temperature: float = 300.0
    timestep: float = 0.5
    steps: int = 1000
    friction: float = 0.01
    interval: int = 10
    seed: int = 0

    def validate(self) -> None:
        """Raise ConfigError, naming the option and its value, when a setting is out of range."""
        if self.ensemble not in ENSEMBLES:
            raise ConfigError(f"ensemble {self.ensemble!r} is unknown; choose one of {', '.join(ENSEMBLES)}")
        checks = (
            ("temperature", self.temperature, self.temperature >= 0, "0 K or more"),
            ("timestep", self.timestep, self.timestep > 0, "more than 0 fs"),
            ("steps", self.steps, self.steps >= 0, "0 or more"),
            ("interval", self.interval, self.interval >= 1, "1 or more"),
        )
        for name, value, valid, expected in checks:
            if not (math.isfinite(value) and valid):
                raise ConfigError(f"{name} must be {expected}, got {value}")
        if self.ensemble == "nvt" and not (math.isfinite(self.friction) and self.friction > 0):
            raise ConfigError(f"friction must be more than 0 1/fs for the nvt ensemble, got {self.friction}")


@dataclass
class MDSummary:
    """Outcome of an MD run: its length, speed and energy conservation.

    Attributes:
        steps: time steps run.
        wall_time: seconds the run took.
        initial_total_energy, final_total_energy: potential plus kinetic energy in eV.
        mean_temperature: mean of the temperatures of the logged steps, in K.
        initial_temperature: temperature at step 0, in K.
        num_atoms: atoms in the structure.
        warnings: signs of an unstable run found by :func:`stability_warnings`, also logged.
    """

    steps: int
    wall_time: float
    initial_total_energy: float
    final_total_energy: float
    mean_temperature: float
    initial_temperature: float = float("nan")
    num_atoms: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def milliseconds_per_step(self) -> float:
        """Wall time per step in ms; NaN for a run of zero steps."""
        return 1000.0 * self.wall_time / self.steps if self.steps else float("nan")


def initialise_velocities(atoms: ase.Atoms, temperature: float, seed: int) -> None:
    """Draw Maxwell-Boltzmann momenta, remove the drift, and scale them to exactly ``temperature`` (K).

    The centre-of-mass motion is removed, and so is the overall rotation of a structure without
    periodic directions. The momenta are then scaled so that ``atoms.get_temperature()`` equals
    ``temperature``. Drawn momenta alone miss it by a random amount, with a relative standard
    deviation of sqrt(2 / 3N), 21 % for 15 atoms. A single atom, or a structure at 0 K, is left
    at rest.
    """
    rng = np.random.default_rng(seed)
    if thermalize_momenta is not None:
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    else:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    # ASE's own rescaling after each removal divides by zero for a single atom, so the scaling is done once below.
    Stationary(atoms, preserve_temperature=False)
    if not atoms.pbc.any() and len(atoms) > 2:
        ZeroRotation(atoms, preserve_temperature=False)
    if atoms.get_kinetic_energy() > 0.0:
        force_temperature(atoms, temperature)


def build_dynamics(atoms: ase.Atoms, settings: MDSettings) -> MolecularDynamics:
    """Create the ASE integrator for ``settings.ensemble``; the noise of Langevin follows the seed."""
    settings.validate()
    timestep = settings.timestep * units.fs
    if settings.ensemble == "nve":
        return VelocityVerlet(atoms, timestep=timestep)
    # The seed is shifted so that the noise does not repeat the random numbers of the velocities.
    rng = np.random.default_rng(settings.seed + 1)
    # fixcm=False: ASE 3.28 deprecates fixcm=True, which samples a slightly wrong distribution for
    # small systems. The centre of mass therefore diffuses under the thermostat's noise.
    return Langevin(
        atoms,
        timestep=timestep,
        temperature_K=settings.temperature,
        friction=settings.friction / units.fs,
        fixcm=False,
        rng=rng,
    )


class TrajectoryWriter:
    """Extended-XYZ trajectory that gains one flushed frame per :meth:`write` call.

    Each frame carries the energy (eV), forces (eV/Å), momenta, the step and the time in fs,
    and the dipole (e·Å) and charges (e) when the calculator provides them. An existing file is
    overwritten when the writer opens; ``mlpot md`` refuses to do so without ``--overwrite``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream: TextIO = open(self.path, "w")
        self.frames = 0

    def write(self, atoms: ase.Atoms, step: int, time_fs: float) -> None:
        """Append the current state of ``atoms`` (which must have a calculator) as one frame."""
        frame = atoms.copy()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        for name in ("dipole", "charges", "stress"):
            if name in atoms.calc.results:
                results[name] = atoms.calc.results[name]
        frame.calc = SinglePointCalculator(frame, **results)
        frame.info["step"] = step
        frame.info["time_fs"] = time_fs
        ase.io.write(self._stream, frame, format="extxyz")
        self._stream.flush()
        self.frames += 1

    def close(self) -> None:
        self._stream.close()


class EnergyLog:
    """Text table of :data:`LOG_COLUMNS`, one flushed line per :meth:`write` call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream: TextIO = open(self.path, "w")
        self._stream.write("# " + " ".join(LOG_COLUMNS) + "\n")
        self._stream.flush()

    def write(self, step: int, time_fs: float, potential: float, kinetic: float, temperature: float) -> None:
        values = (f"{step:>16d}", f"{time_fs:>16.4f}", f"{potential:>16.8f}", f"{kinetic:>16.8f}")
        values += (f"{potential + kinetic:>16.8f}", f"{temperature:>16.4f}")
        self._stream.write(" ".join(values) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


def read_log(path: str | Path) -> dict[str, np.ndarray]:
    """Read a log written by :class:`EnergyLog` into one array per column."""
    table = np.loadtxt(path, comments="#", ndmin=2)
    return {name: table[:, column] for column, name in enumerate(LOG_COLUMNS)}


def run_md(
    atoms: ase.Atoms,
    settings: MDSettings,
    trajectory: str | Path | None = None,
    log: str | Path | None = None,
    progress: bool = False,
    initialise: bool = True,
) -> MDSummary:
    """Run MD on ``atoms``, which must have a calculator attached.

    Args:
        atoms: the structure; it is moved in place.
        settings: ensemble, temperature, time step and the other options.
        trajectory: extended-XYZ file that gets a frame every ``settings.interval`` steps,
            step 0 included.
        log: text file that gets a line of :data:`LOG_COLUMNS` at the same steps.
        progress: show a tqdm progress bar with the temperature and total energy.
        initialise: draw new Maxwell-Boltzmann velocities; ``False`` keeps the momenta of ``atoms``.

    The returned summary lists the signs of an unstable run (see :func:`stability_warnings`),
    which are also logged as warnings.

    Raises:
        ConfigError: a setting is out of range.
    """
    settings.validate()
    if atoms.calc is None:
        raise ValueError("atoms has no calculator; attach an MLPotCalculator before running MD")
    if initialise:
        initialise_velocities(atoms, settings.temperature, settings.seed)
    dynamics = build_dynamics(atoms, settings)
    writer = TrajectoryWriter(trajectory) if trajectory is not None else None
    energy_log = EnergyLog(log) if log is not None else None
    bar = tqdm(total=settings.steps, unit="step", desc="md", disable=not progress)
    temperatures: list[float] = []
    totals: list[float] = []

    def record() -> None:
        step = dynamics.nsteps
        time_fs = step * settings.timestep
        potential = atoms.get_potential_energy()
        kinetic = atoms.get_kinetic_energy()
        temperature = atoms.get_temperature()
        temperatures.append(temperature)
        totals.append(potential + kinetic)
        if writer is not None:
            writer.write(atoms, step, time_fs)
        if energy_log is not None:
            energy_log.write(step, time_fs, potential, kinetic, temperature)
        bar.set_postfix(T=f"{temperature:.1f} K", E=f"{potential + kinetic:.4f} eV", refresh=False)

    def advance_bar() -> None:
        if dynamics.nsteps > 0:
            bar.update(1)

    dynamics.attach(record, interval=settings.interval)
    dynamics.attach(advance_bar, interval=1)
    start = time.perf_counter()
    try:
        dynamics.run(settings.steps)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if energy_log is not None:
            energy_log.close()
    wall_time = time.perf_counter() - start
    # The calculator has the final state cached, so this costs no model call.
    final_total = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    summary = MDSummary(
        steps=settings.steps,
        wall_time=wall_time,
        initial_total_energy=totals[0],
        final_total_energy=final_total,
        mean_temperature=float(np.mean(temperatures)),
        initial_temperature=temperatures[0],
        num_atoms=len(atoms),
    )
    summary.warnings = stability_warnings(summary, settings)
    for message in summary.warnings:
        logger.warning(message)
    return summary


def stability_warnings(summary: MDSummary, settings: MDSettings) -> list[str]:
    """Return a message for each sign that the run blew up; an empty list for a sound run.

    Two signs are checked. The first is a mean temperature above :data:`MAX_TEMPERATURE_RATIO`
    times a target above 0 K. The second, for NVE only, is a total-energy change beyond
    :data:`MAX_NVE_DRIFT` meV/atom/ps times the simulated time plus :data:`NVE_ENERGY_TOLERANCE`
    meV/atom. Both name the likely causes: a time step too long for the fastest vibration, or a
    structure that left the model's training range.
    """
    advice = (
        f"Either the time step of {settings.timestep:g} fs is too long (try a smaller --timestep; 0.5 fs or less "
        "suits molecules with hydrogen), or the structure left the range of the model's training data (look "
        "for broken bonds or atoms flying apart in the trajectory)"
    )
    messages = []
    limit = MAX_TEMPERATURE_RATIO * settings.temperature
    if settings.temperature > 0.0 and summary.mean_temperature > limit:
        messages.append(
            f"the mean temperature {summary.mean_temperature:.1f} K is more than {MAX_TEMPERATURE_RATIO:g} times "
            f"the target {settings.temperature:g} K, so the run is probably unstable. {advice}"
        )

    if settings.ensemble == "nve" and summary.num_atoms > 0:
        duration_ps = settings.steps * settings.timestep / 1000.0
        change = 1000.0 * abs(summary.final_total_energy - summary.initial_total_energy) / summary.num_atoms
        bound = MAX_NVE_DRIFT * duration_ps + NVE_ENERGY_TOLERANCE
        if not change <= bound:
            messages.append(
                f"the total energy changed by {change:.3g} meV/atom over {duration_ps:.4g} ps of NVE, more than "
                f"the {bound:.3g} meV/atom that a stable run stays within ({MAX_NVE_DRIFT:g} meV/atom/ps plus "
                f"{NVE_ENERGY_TOLERANCE:g} meV/atom). {advice}"
            )
    return messages
