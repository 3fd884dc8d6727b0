"""Training runs killed with SIGKILL: files stay loadable and --resume finishes the run.

The subprocess runs train a tiny float64 model on 40 ethanol structures for five epochs. A run
resumed after a kill starts the interrupted epoch again from the checkpoint of the epoch before,
with the same batches, so on CPU its final weights equal those of an uninterrupted run bitwise.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest
import torch

from mlpot.errors import ModelFileError
from mlpot.models.io import load_model
from mlpot.training.callbacks import AtomicCheckpointIO, load_checkpoint
from mlpot.training.module import PLATEAU_STATE

REPOSITORY = Path(__file__).resolve().parents[1]
ETHANOL = REPOSITORY / "data" / "ethanol" / "train.xyz"
ETHANOL_ISOLATED = REPOSITORY / "data" / "ethanol" / "isolated_atoms.xyz"
EPOCHS = 5


def train_command(train_path: Path, valid_path: Path, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "mlpot.cli.main", "train",
        "--train-file", str(train_path), "--valid-file", str(valid_path),
        "--isolated-atoms-file", str(ETHANOL_ISOLATED),
        "--num-features", "8", "--radial-hidden", "8", "--num-interactions", "1", "--dtype", "float64",
        "--batch-size", "4", "--max-epochs", str(EPOCHS), "--device", "cpu", "--progress-bar", "false",
        # A high rate and no patience make the plateau scheduler cut the rate within five epochs.
        "--learning-rate", "0.1", "--lr-patience", "0", "--lr-factor", "0.5",
        "--output", str(output),
    ]  # fmt: skip


def environment() -> dict[str, str]:
    variables = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONUNBUFFERED": "1"}
    variables.pop("MLPOT_RUN_FOLDER", None)
    return variables


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as stream:
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=environment())


def finish(command: list[str], log: Path) -> None:
    process = start(command, log)
    assert process.wait(timeout=900) == 0, log.read_text()[-3000:]


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 600.0) -> None:
    """Poll ``condition`` every millisecond until it holds; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"training ended before it could be killed:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the training"
        time.sleep(0.001)


def file_identity(path: Path) -> tuple[int, int]:
    """Inode and modification time of ``path``: an atomic rewrite changes at least one of them."""
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def checkpoint_state(folder: Path) -> dict[str, torch.Tensor]:
    """Weights, averaged weights, optimiser moments and plateau-scheduler state of last.ckpt."""
    checkpoint = load_checkpoint(folder / "checkpoints" / "last.ckpt")
    state = dict(checkpoint["state_dict"])
    for index, moments in enumerate(checkpoint["optimizer_states"][0]["state"].values()):
        for name, value in moments.items():
            state[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    for name, value in checkpoint[PLATEAU_STATE].items():
        if isinstance(value, (int, float)):
            state[f"plateau.{name}"] = torch.tensor(value, dtype=torch.float64)
    state["plateau.lr"] = torch.tensor(checkpoint[PLATEAU_STATE]["_last_lr"], dtype=torch.float64)
    return state


def assert_same_state(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert sorted(expected) == sorted(actual)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs from the uninterrupted run"


def assert_files_load(folder: Path) -> None:
    """Every checkpoint and the model file, where they exist, load without error."""
    for path in sorted((folder / "checkpoints").glob("*.ckpt")):
        load_checkpoint(path)
    if (folder / "model.pt").exists():
        load_model(folder / "model.pt")


@pytest.fixture(scope="module")
def ethanol_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ethanol")
    frames = ase.io.read(ETHANOL, index=":48")
    train_path, valid_path = folder / "train.xyz", folder / "valid.xyz"
    ase.io.write(train_path, frames[:40])
    ase.io.write(valid_path, frames[40:])
    return train_path, valid_path


@pytest.fixture(scope="module")
def uninterrupted(ethanol_files, tmp_path_factory) -> Path:
    """The run folder of a training that was not interrupted."""
    output = tmp_path_factory.mktemp("uninterrupted") / "run"
    finish(train_command(*ethanol_files, output), output.parent / "log.txt")
    return output


@pytest.mark.slow
def test_learning_rate_drops(uninterrupted):
    # Guards the comparisons below: they cover a scheduler that changed the rate.
    state = load_checkpoint(uninterrupted / "checkpoints" / "last.ckpt")[PLATEAU_STATE]
    assert state["_last_lr"][0] < 0.1


@pytest.mark.slow
def test_kill_mid_epoch_then_resume(ethanol_files, uninterrupted, tmp_path):
    output, log = tmp_path / "run", tmp_path / "log.txt"
    command = train_command(*ethanol_files, output)
    process = start(command, log)
    last = output / "checkpoints" / "last.ckpt"
    wait_for(last.exists, process, log)
    # The time between the first two checkpoints is one epoch. Half an epoch after the second
    # checkpoint, the third epoch of five is running, however fast the machine.
    first = time.monotonic(), file_identity(last)
    wait_for(lambda: file_identity(last) != first[1], process, log)
    second = time.monotonic()
    wait_for(lambda: time.monotonic() > second + 0.5 * (second - first[0]), process, log)
    kill(process)

    assert not (output / "model.pt").exists(), "the run finished before it was killed"
    assert_files_load(output)
    finish([sys.executable, "-m", "mlpot.cli.main", "train", "--resume", str(output)], log)

    assert_same_state(checkpoint_state(uninterrupted), checkpoint_state(output))
    expected, resumed = load_model(uninterrupted / "model.pt"), load_model(output / "model.pt")
    assert_same_state(expected.state_dict(), resumed.state_dict())


@pytest.mark.slow
def test_repeated_kills_keep_files_loadable(ethanol_files, uninterrupted, tmp_path):
    output, log = tmp_path / "run", tmp_path / "log.txt"
    fresh = train_command(*ethanol_files, output)
    resume = [sys.executable, "-m", "mlpot.cli.main", "train", "--resume", str(output)]
    last = output / "checkpoints" / "last.ckpt"
    rng = random.Random(7)

    # The first kill comes before any checkpoint exists, so the resume starts from the first epoch.
    process = start(fresh, log)
    wait_for((output / "config.yaml").exists, process, log)
    kill(process)
    assert not last.exists()

    kills = 0
    for _ in range(3):
        process = start(resume, log)
        before = last.stat().st_mtime_ns if last.exists() else 0
        wait_for(lambda: last.exists() and last.stat().st_mtime_ns > before, process, log)
        # Then kill while the next checkpoint is being written, if the poll catches that, or
        # right after it is written, or at a random moment before.
        written = last.stat().st_mtime_ns
        deadline = time.monotonic() + rng.uniform(0.0, 2.0)
        while process.poll() is None:
            writing = any(last.parent.glob(".*.tmp")) or last.stat().st_mtime_ns > written
            if writing or time.monotonic() > deadline:
                kill(process)
                kills += 1
                break
            time.sleep(0.001)
        assert process.returncode in (0, -signal.SIGKILL), log.read_text()[-3000:]
        assert_files_load(output)
        if process.returncode == 0:
            break  # the run reached its last epoch before this kill
    assert kills >= 2

    if not (output / "model.pt").exists():
        finish(resume, log)
    assert_files_load(output)
    assert not list(last.parent.glob(".*.tmp")), "a partial file of a killed write was left behind"
    assert_same_state(checkpoint_state(uninterrupted), checkpoint_state(output))
    expected, resumed = load_model(uninterrupted / "model.pt"), load_model(output / "model.pt")
    assert_same_state(expected.state_dict(), resumed.state_dict())


WRITER = """
import sys
import torch
from mlpot.training.callbacks import AtomicCheckpointIO

io = AtomicCheckpointIO()
for step in range(1_000_000):
    weights = torch.full((3_000_000,), float(step), dtype=torch.float64)
    io.save_checkpoint({"state_dict": {"weight": weights}, "pytorch-lightning_version": "2.6.6"}, sys.argv[1])
"""


@pytest.mark.slow
def test_kill_during_checkpoint_writes(tmp_path):
    # Each kill waits for a write to start, then lets it run a random part of the ~0.15 s it
    # takes, so most kills land inside torch.save or fsync.
    path = tmp_path / "last.ckpt"
    rng = random.Random(3)
    partial_seen = 0
    for _ in range(4):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=environment())
        deadline = time.monotonic() + 300
        while not (path.exists() and list(tmp_path.glob(".*.tmp"))):
            assert process.poll() is None, "the writer stopped"
            assert time.monotonic() < deadline, "timed out waiting for a checkpoint write"
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.1))
        partial_seen += bool(list(tmp_path.glob(".*.tmp")))
        kill(process)
        assert process.returncode == -signal.SIGKILL

        weights = load_checkpoint(path)["state_dict"]["weight"]
        assert weights.shape == (3_000_000,)
        assert bool((weights == weights[0]).all()), "the checkpoint mixes two writes"
        for leftover in tmp_path.glob(".*.tmp"):
            leftover.unlink()  # as a resumed run does, so that the next wait finds a new write
    assert partial_seen > 0, "no kill landed inside a write"


def test_checkpoint_checksum_detects_flipped_byte(tmp_path):
    weights = torch.linspace(-1.0, 1.0, 512, dtype=torch.float64)
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"weight": weights}, "pytorch-lightning_version": "2.6.6"}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["weight"], weights)

    data = bytearray(path.read_bytes())
    start_of_weights = bytes(data).find(weights.numpy().tobytes())
    assert start_of_weights >= 0, "the stored weights were not found in the file"
    data[start_of_weights + 1000] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.9])
def test_truncated_checkpoint_raises(tmp_path, fraction):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(300)}, "pytorch-lightning_version": "2.6.6"}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load_checkpoint(path)
