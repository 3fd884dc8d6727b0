"""Freed memory kept in the process: later allocations of the same size fault in no new pages."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

import mlpot.calculator
from mlpot.calculator import MLPotCalculator
from mlpot.config import ModelConfig
from mlpot.models.potential import Potential

REPOSITORY = Path(__file__).resolve().parents[1]

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is a glibc function"
)

# Runs eight energy+forces calls on 1,536 water atoms and prints the fewest minor page faults of
# the last four. The calls allocate and free blocks of tens of MB, which glibc maps and unmaps by
# default. With freed memory retained, the heap stops growing after a few calls.
FAULTS_OF_LATE_CALLS = """
import resource, sys
import numpy as np
import torch
from ase.calculators.calculator import all_changes
sys.path.insert(0, "scripts")
from benchmark_md import build_potential, water_box
from mlpot.calculator import MLPotCalculator

torch.set_num_threads(1)
calculator = MLPotCalculator(build_potential("float32"), retain_memory=sys.argv[1] == "retain")
atoms = water_box(8)
rng = np.random.default_rng(0)
faults = []
for _ in range(8):
    atoms.positions = atoms.positions + rng.normal(scale=0.001, size=atoms.positions.shape)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    calculator.calculate(atoms, ["energy", "forces"], all_changes)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print("faults", min(faults[4:]))
"""


def faults_of_late_calls(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_LATE_CALLS, mode],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split("faults")[-1])


@glibc_only
def test_calls_fault_pages_without_retain():
    # Guards the next test: by default each call faults in hundreds of MB again.
    assert faults_of_late_calls("default") > 20_000


@glibc_only
def test_retained_memory_reused_by_calls():
    assert faults_of_late_calls("retain") < 5_000


@pytest.fixture(scope="module")
def potential() -> Potential:
    config = ModelConfig(num_features=8, radial_hidden=8, num_interactions=1)
    return Potential(config, [1, 8], [-13.6, -2040.0])


@pytest.mark.parametrize("retain", [True, False])
def test_calculator_retain_option(potential, monkeypatch, retain):
    calls = []
    monkeypatch.setattr(mlpot.calculator, "retain_freed_memory", lambda: calls.append(True) or True)
    MLPotCalculator(potential, retain_memory=retain)
    assert calls == ([True] if retain else [])


def test_calculator_retains_by_default(potential, monkeypatch):
    calls = []
    monkeypatch.setattr(mlpot.calculator, "retain_freed_memory", lambda: calls.append(True) or True)
    MLPotCalculator(potential)
    assert calls == [True]
