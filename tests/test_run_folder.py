"""Run folders: the lock against two trainings in one folder, and what --resume may change.

Trainings here use a tiny float64 model on 20 + 4 ethanol structures, so each takes seconds.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest
import torch
import yaml

from mlpot.config import Config
from mlpot.errors import ConfigError
from mlpot.models.io import load_model
from mlpot.training.callbacks import load_checkpoint
from mlpot.training.lock import LockOwner, RunLock, read_owner
from mlpot.training.run import train

REPOSITORY = Path(__file__).resolve().parents[1]
ETHANOL = REPOSITORY / "data" / "ethanol" / "train.xyz"


def small_config(train_path: Path, valid_path: Path, output: Path, epochs: int) -> Config:
    config = Config()
    config.data.train_file = str(train_path)
    config.data.valid_file = str(valid_path)
    config.data.batch_size = 4
    config.model.num_features = 16
    config.model.radial_hidden = 16
    config.model.num_interactions = 2
    config.model.dtype = "float64"
    config.training.output = str(output)
    config.training.max_epochs = epochs
    config.training.progress_bar = False
    config.training.device = "cpu"
    return config


@pytest.fixture(scope="module")
def ethanol_files(tmp_path_factory) -> tuple[Path, Path]:
    """20 training and 4 validation ethanol structures."""
    folder = tmp_path_factory.mktemp("ethanol")
    frames = ase.io.read(ETHANOL, index=":24")
    train_path, valid_path = folder / "train.xyz", folder / "valid.xyz"
    ase.io.write(train_path, frames[:20])
    ase.io.write(valid_path, frames[20:])
    return train_path, valid_path


@pytest.fixture(scope="module")
def finished_run(ethanol_files, tmp_path_factory) -> Path:
    """A run folder trained for two epochs; tests copy it before changing it."""
    output = tmp_path_factory.mktemp("finished") / "run"
    train(small_config(*ethanol_files, output, epochs=2))
    return output


def dead_pid() -> int:
    """Return the process id of a process that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))
    return path


def copy_run(source: Path, destination: Path) -> Path:
    subprocess.run(["cp", "-r", str(source), str(destination)], check=True)
    return destination


# The lock itself


def test_lock_names_owner(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert read_owner(lock.path) == LockOwner(os.getpid(), socket.gethostname())


def test_lock_removed_on_release(tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    with RunLock(folder):
        pass
    assert not (folder / ".lock").exists()
    assert folder.is_dir()


def test_lock_removes_empty_new_folder(tmp_path):
    folder = tmp_path / "new"
    with RunLock(folder):
        assert folder.is_dir()
    assert not folder.exists()


def test_live_lock_rejected(tmp_path):
    folder = tmp_path / "run"
    path = write_lock(folder, os.getpid())
    with pytest.raises(ConfigError, match=f"in use by process {os.getpid()} on host"):
        RunLock(folder).acquire()
    assert read_owner(path).pid == os.getpid()


def test_lock_of_other_host_rejected(tmp_path):
    folder = tmp_path / "run"
    write_lock(folder, dead_pid(), host="elsewhere.example")
    with pytest.raises(ConfigError, match="cannot check a process on another host"):
        RunLock(folder).acquire()


def test_empty_lock_rejected(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text("")
    with pytest.raises(ConfigError, match="names no process"):
        RunLock(folder).acquire()


def test_stale_lock_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    pid = dead_pid()
    write_lock(folder, pid)
    with caplog.at_level(logging.WARNING, logger="mlpot.training.lock"):
        with RunLock(folder) as lock:
            assert read_owner(lock.path).pid == os.getpid()
    assert f"process {pid} on this host, which no longer runs" in caplog.text


def test_second_lock_in_one_process_rejected(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder):
        with pytest.raises(ConfigError, match="in use"):
            RunLock(folder).acquire()
        assert (folder / ".lock").exists()


# The lock during training


def test_train_rejects_locked_new_folder(ethanol_files, tmp_path):
    output = tmp_path / "run"
    write_lock(output, os.getpid())
    with pytest.raises(ConfigError, match="choose another --output"):
        train(small_config(*ethanol_files, output, epochs=1))
    assert not (output / "checkpoints").exists()


def test_resume_rejects_locked_folder(ethanol_files, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    write_lock(run, os.getpid())
    before = (run / "model.pt").read_bytes()
    with pytest.raises(ConfigError, match="wait for it to end before resuming"):
        train(small_config(*ethanol_files, run, epochs=3), resume=run)
    assert (run / "model.pt").read_bytes() == before


def test_train_releases_lock(ethanol_files, tmp_path):
    output = tmp_path / "run"
    write_lock(output, dead_pid())
    train(small_config(*ethanol_files, output, epochs=1))
    assert (output / "model.pt").is_file()
    assert not (output / ".lock").exists()


def test_failed_train_releases_lock(ethanol_files, tmp_path):
    output = tmp_path / "run"
    config = small_config(*ethanol_files, output, epochs=1)
    config.data.train_file = str(tmp_path / "absent.xyz")
    with pytest.raises(ValueError, match="file not found"):
        train(config)
    assert not output.exists()


def test_two_trainings_into_one_folder(ethanol_files, tmp_path):
    """Two command-line trainings started at once into one new folder: exactly one runs."""
    train_path, valid_path = ethanol_files
    output = tmp_path / "run"
    command = [
        sys.executable, "-m", "mlpot.cli.main", "train", "--train-file", str(train_path),
        "--valid-file", str(valid_path), "--num-features", "8", "--radial-hidden", "8",
        "--num-interactions", "1", "--max-epochs", "2", "--device", "cpu", "--output", str(output),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    environment.pop("MLPOT_RUN_FOLDER", None)
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment) for _ in range(2)]
    results = [(process.wait(timeout=600), process.stderr.read()) for process in processes]

    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], [stderr[-2000:] for _, stderr in results]
    rejected = next(stderr for code, stderr in results if code == 1)
    assert "in use by process" in rejected or "already contains a run" in rejected
    assert len(list((output / "checkpoints").glob("*.ckpt"))) == 2
    assert not (output / ".lock").exists()


# What --resume may change


def test_resume_rejects_model_change(ethanol_files, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    config = small_config(*ethanol_files, run, epochs=3)
    config.model.cutoff = 4.0
    config.model.num_features = 8
    with pytest.raises(ConfigError, match=r"cutoff \(5.0 in config.yaml, 4.0 now\), num_features") as error:
        train(config, resume=run)
    assert f"--init-from {run / 'model.pt'}" in str(error.value)
    assert not (run / ".lock").exists()


def test_resume_rejects_data_change(ethanol_files, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    config = small_config(*ethanol_files, run, epochs=3)
    config.data.train_file = str(ethanol_files[1])
    config.data.batch_size = 2
    with pytest.raises(ConfigError, match="train_file .*, batch_size"):
        train(config, resume=run)


def test_resume_cli_rejects_flags(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    command = [sys.executable, "-m", "mlpot.cli.main", "train", "--resume", str(run), "--cutoff", "4.0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "other values of cutoff" in result.stderr
    assert "--init-from" in result.stderr


def test_resume_cli_rejects_config_file(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    command = [sys.executable, "-m", "mlpot.cli.main", "train", str(run / "config.yaml"), "--resume", str(run)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "give either CONFIG" in result.stderr


def test_resume_accepts_run_length(ethanol_files, finished_run, tmp_path, caplog):
    run = copy_run(finished_run, tmp_path / "run")
    config = small_config(*ethanol_files, run, epochs=3)
    config.training.early_stopping_patience = 5
    config.data.eval_batch_size = 2
    with caplog.at_level(logging.INFO, logger="mlpot.training.run"):
        train(config, resume=run)
    assert "saved after epoch 1; training goes on with epoch 2 (max_epochs 3)" in caplog.text
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 2
    early_stopping = next(state for name, state in checkpoint["callbacks"].items() if name.startswith("EarlyStopping"))
    assert early_stopping["patience"] == 5


def test_resume_with_nothing_left_keeps_model(ethanol_files, finished_run, tmp_path, caplog):
    run = copy_run(finished_run, tmp_path / "run")
    before = (run / "model.pt").read_bytes()
    modified = (run / "model.pt").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="mlpot.training.run"):
        path = train(small_config(*ethanol_files, run, epochs=2), resume=run)
    assert path == run / "model.pt"
    assert "nothing left to train" in caplog.text
    assert "max_epochs is 2" in caplog.text
    assert (run / "model.pt").read_bytes() == before
    assert (run / "model.pt").stat().st_mtime_ns == modified


def test_resume_with_nothing_left_writes_missing_model(ethanol_files, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    expected = load_model(run / "model.pt").state_dict()
    (run / "model.pt").unlink()
    train(small_config(*ethanol_files, run, epochs=2), resume=run)
    written = load_model(run / "model.pt").state_dict()
    for name in expected:
        assert torch.equal(expected[name], written[name]), name


def test_resume_cli_reports_unchanged_model(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    command = [sys.executable, "-m", "mlpot.cli.main", "train", "--resume", str(run)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Model unchanged: {run / 'model.pt'}" in result.stdout


# init_from with another architecture


def test_init_from_other_architecture(ethanol_files, finished_run, tmp_path):
    config = small_config(*ethanol_files, tmp_path / "tuned", epochs=1)
    config.training.init_from = str(finished_run / "model.pt")
    config.model.num_features = 8
    config.model.num_interactions = 1
    message = r"model file has num_features 16, num_interactions 2; this config has 8, 1\."
    with pytest.raises(ConfigError, match=message):
        train(config)


def test_init_from_other_cutoff(ethanol_files, finished_run, tmp_path):
    config = small_config(*ethanol_files, tmp_path / "tuned", epochs=1)
    config.training.init_from = str(finished_run / "model.pt")
    config.model.cutoff = 4.0
    with pytest.raises(ConfigError, match=r"model file has cutoff 5.0; this config has 4.0\."):
        train(config)


# Ctrl-C


def test_interrupt_prints_resume_command(ethanol_files, tmp_path):
    train_path, valid_path = ethanol_files
    output = tmp_path / "run"
    command = [
        sys.executable, "-m", "mlpot.cli.main", "train", "--train-file", str(train_path),
        "--valid-file", str(valid_path), "--num-features", "8", "--radial-hidden", "8",
        "--num-interactions", "1", "--max-epochs", "1000", "--device", "cpu", "--output", str(output),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONUNBUFFERED": "1"}
    environment.pop("MLPOT_RUN_FOLDER", None)
    # A shell without job control starts background jobs with SIGINT ignored, and the child would
    # inherit that, so the child gets the default disposition, for which Python raises KeyboardInterrupt.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = output / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out waiting for the first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr[-3000:]
    assert f"continue with: mlpot train --resume {output}" in stderr
    assert "training interrupted in epoch " in stderr
    assert not (output / ".lock").exists()
    stored = yaml.safe_load((output / "config.yaml").read_text())
    assert stored["training"]["max_epochs"] == 1000
