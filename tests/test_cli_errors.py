"""User errors on the command line: exit code, and a one-line message with the what, where and fix.

Every case runs ``python -m mlpot.cli.main`` in a subprocess, as a user would, and checks the
message text. Files that need a model get an untrained one, since only its elements matter.
"""

from __future__ import annotations

import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import torch
import yaml

from mlpot.config import Config, ModelConfig
from mlpot.models.io import save_model
from mlpot.models.potential import Potential
from mlpot.training.callbacks import AtomicCheckpointIO

REPOSITORY = Path(__file__).resolve().parents[1]
ETHANOL = REPOSITORY / "data" / "ethanol" / "train.xyz"


def run_cli(*arguments: str, cwd: Path, encoding: str | None = None) -> subprocess.CompletedProcess:
    """Run ``mlpot`` in ``cwd``; ``encoding`` sets PYTHONIOENCODING, the encoding of its console."""
    command = [sys.executable, "-m", "mlpot.cli.main", *arguments]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    if encoding is not None:
        environment["PYTHONIOENCODING"] = encoding
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=environment)


def error_line(result: subprocess.CompletedProcess) -> str:
    """Return the line of stderr that reports the error."""
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert lines, f"no error line in stderr:\n{result.stderr[-3000:]}"
    return lines[-1]


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str, exit_code: int = 1) -> None:
    """Check the exit code, the absence of a traceback, and each fragment of the error line."""
    assert result.returncode == exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = error_line(result)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} missing from: {line}"


class Exploit:
    """An object whose unpickling runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with five ethanol frames and an untrained H/C/O model; the tests run inside it."""
    folder = tmp_path_factory.mktemp("cli_errors")
    ase.io.write(folder / "ethanol.xyz", ase.io.read(ETHANOL, index=":5"))
    config = ModelConfig(num_features=8, radial_hidden=8, num_interactions=1, dtype="float64")
    save_model(Potential(config, [1, 6, 8], [-13.6, -1025.3, -2035.6]), folder / "model.pt")
    return folder


# Missing, unreadable and malformed files


def test_missing_data_file(files):
    result = run_cli("train", "--train-file", "absent.xyz", cwd=files)
    assert_user_error(result, "absent.xyz: file not found", "check the path", str(files))


def test_missing_model_file(files):
    result = run_cli("evaluate", "absent.pt", "ethanol.xyz", cwd=files)
    assert_user_error(result, "model file absent.pt not found")


def test_folder_as_data_file(files, tmp_path):
    result = run_cli("train", "--train-file", str(tmp_path), cwd=files)
    assert_user_error(result, f"{tmp_path} is a folder", "structure file")


def test_folder_as_model_file(files, tmp_path):
    result = run_cli("evaluate", str(tmp_path), "ethanol.xyz", cwd=files)
    assert_user_error(result, f"{tmp_path} is not a file", "model.pt")


def test_unreadable_data_file(files, tmp_path):
    path = tmp_path / "locked.xyz"
    path.write_text((files / "ethanol.xyz").read_text())
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("this user reads files without read permission (root)")
    result = run_cli("train", "--train-file", str(path), cwd=files)
    assert_user_error(result, f"{path}: permission denied", "chmod")


def test_random_bytes_data_file(files, tmp_path):
    path = tmp_path / "noise.xyz"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    result = run_cli("train", "--train-file", str(path), cwd=files)
    assert_user_error(result, f"{path}: could not be read by ASE", "malformed")


def test_random_bytes_model_file(files, tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    result = run_cli("evaluate", str(path), "ethanol.xyz", cwd=files)
    assert_user_error(result, f"{path} could not be read as a model file", "corrupted")
    # torch's own message advises weights_only=False, which would run code from the file.
    assert "weights_only" not in result.stderr


def test_truncated_extxyz(files, tmp_path):
    text = (files / "ethanol.xyz").read_text()
    lines = text.splitlines(keepends=True)
    frame_length = int(lines[0]) + 2
    path = tmp_path / "cut.xyz"
    path.write_text("".join(lines[: 3 * frame_length + 6]))  # frame 3 stops after four atoms
    result = run_cli("train", "--train-file", str(path), cwd=files)
    assert_user_error(result, f"{path}: could not be read by ASE", "frame 3", "truncated")


# Config keys and values


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def test_unknown_config_key(files, tmp_path):
    path = write_config(tmp_path / "typo.yaml", {"data": {"train_file": "ethanol.xyz", "batchsize": 4}})
    result = run_cli("train", str(path), cwd=files)
    assert_user_error(result, str(path), "section 'data'", "unknown config key 'batchsize'", "did you mean 'batch_size'")


def test_unknown_flag(files):
    result = run_cli("train", "--train-file", "ethanol.xyz", "--batchsize", "4", cwd=files)
    assert result.returncode == 2
    assert "unrecognized arguments: --batchsize" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_type_in_config(files, tmp_path):
    path = write_config(tmp_path / "typed.yaml", {"data": {"train_file": "ethanol.xyz"}, "model": {"num_features": [8, 16]}})
    result = run_cli("train", str(path), cwd=files)
    assert_user_error(result, str(path), "model.num_features expects int", "[8, 16]")


def test_wrong_type_on_command_line(files):
    result = run_cli("train", "--train-file", "ethanol.xyz", "--max-epochs", "many", cwd=files)
    assert_user_error(result, "training.max_epochs expects int", "'many'")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--batch-size", "0", "data.batch_size must be 1 or more, got 0"),
        ("--valid-fraction", "1.5", "data.valid_fraction must be more than 0.0 and less than 1.0, got 1.5"),
        ("--cutoff", "nan", "model.cutoff must be more than 0.0, got nan"),
        ("--ema-decay", "1", "training.ema_decay must be 0.0 or more and less than 1.0, got 1.0"),
    ],
)
def test_value_out_of_range(files, flag, value, expected):
    result = run_cli("train", "--train-file", "ethanol.xyz", flag, value, cwd=files)
    assert_user_error(result, expected, f"set {flag}")


def test_evaluate_batch_size_zero(files):
    result = run_cli("evaluate", "model.pt", "ethanol.xyz", "--batch-size", "0", cwd=files)
    assert result.returncode == 2
    assert "--batch-size: must be 1 or more, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_ranges_accept_defaults_and_examples():
    from mlpot.config import load_config
    from mlpot.training.limits import check_ranges

    check_ranges(Config())
    configs = sorted((REPOSITORY / "data" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        check_ranges(load_config(path))


# Labels, elements and units


def test_missing_label(files):
    result = run_cli("train", "--train-file", "ethanol.xyz", "--energy-key", "REF_energy", cwd=files)
    assert_user_error(result, "ethanol.xyz, frame 0", "label 'REF_energy' (energy) is missing", "energy_key")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_unknown_element(files, tmp_path, command):
    atoms = ase.io.read(files / "ethanol.xyz", index=0)
    atoms.numbers[[0, 3]] = [7, 16]  # one C becomes N, one H becomes S
    path = tmp_path / "with_n_s.xyz"
    ase.io.write(path, atoms)
    arguments = [command, "model.pt", str(path)]
    if command == "predict":
        arguments += ["-o", str(tmp_path / "out.xyz")]
    result = run_cli(*arguments, cwd=files)
    assert_user_error(result, f"{path}, frame 0", "element N, S", "(H, C, O)", "use a model trained on data that contain")


@pytest.mark.parametrize(
    ("command", "flag", "unit"),
    [
        ("train", "--energy-unit", "furlongs"),
        ("train", "--stress-unit", "GPascal"),
        ("evaluate", "--dipole-unit", "Coulomb"),
    ],
)
def test_unknown_unit(files, command, flag, unit):
    # The unit is rejected before the data is read, even for a label the file lacks.
    quantity = flag.removeprefix("--").replace("-", "_")
    arguments = [command, "--train-file", "ethanol.xyz"] if command == "train" else [command, "model.pt", "ethanol.xyz"]
    result = run_cli(*arguments, flag, unit, cwd=files)
    assert_user_error(result, f"{quantity}: unknown {quantity.removesuffix('_unit')} unit {unit!r}", "use one of")


# Damaged checkpoints and model files given to --resume and --init-from


def make_run_folder(folder: Path, checkpoint: bytes) -> Path:
    """Write a run folder whose config trains on ETHANOL and whose last.ckpt contains ``checkpoint``."""
    config = Config()
    config.data.train_file = str(ETHANOL)
    config.training.output = str(folder)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (folder / "checkpoints" / "last.ckpt").write_bytes(checkpoint)
    return folder


def checkpoint_bytes(tmp_path: Path) -> bytes:
    """Return a small checkpoint file in the layout mlpot writes, with its checksum."""
    checkpoint = {
        "state_dict": {"potential.weight": torch.linspace(-1.0, 1.0, 256, dtype=torch.float64)},
        "pytorch-lightning_version": "2.6.6",
        "epoch": 3,
    }
    path = tmp_path / "source.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return path.read_bytes()


def test_truncated_checkpoint_on_resume(files, tmp_path):
    data = checkpoint_bytes(tmp_path)
    run = make_run_folder(tmp_path / "run", data[: len(data) // 2])
    result = run_cli("train", "--resume", str(run), cwd=files)
    assert_user_error(result, f"cannot resume from {run}", "last.ckpt: truncated or corrupted", "copy checkpoints/best.ckpt")


def test_flipped_byte_checkpoint_on_resume(files, tmp_path):
    data = bytearray(checkpoint_bytes(tmp_path))
    weights = torch.linspace(-1.0, 1.0, 256, dtype=torch.float64).numpy().tobytes()
    start = bytes(data).find(weights)
    assert start >= 0, "the stored weights were not found in the checkpoint file"
    data[start + 100] ^= 0x01
    run = make_run_folder(tmp_path / "run", bytes(data))
    result = run_cli("train", "--resume", str(run), cwd=files)
    assert_user_error(result, f"cannot resume from {run}", "checksum mismatch", "corrupted")


def test_model_file_as_checkpoint(files, tmp_path):
    run = make_run_folder(tmp_path / "run", (files / "model.pt").read_bytes())
    result = run_cli("train", "--resume", str(run), cwd=files)
    assert_user_error(result, "is not a training checkpoint", "it is a model file")


@pytest.mark.parametrize("container", ["torch", "pickle"])
def test_checkpoint_with_code_on_resume(files, tmp_path, container):
    marker = tmp_path / "marker"
    exploit = {"state_dict": {}, "pytorch-lightning_version": "2.6.6", "callbacks": Exploit(marker)}
    source = tmp_path / "exploit.ckpt"
    if container == "torch":
        torch.save(exploit, source)
    else:
        source.write_bytes(pickle.dumps(exploit, protocol=2))
    run = make_run_folder(tmp_path / "run", source.read_bytes())
    result = run_cli("train", "--resume", str(run), cwd=files)
    assert_user_error(result, f"cannot resume from {run}", "rejected, because loading it would run code", "system")
    assert not marker.exists()


def test_exploit_runs_when_unpickled(tmp_path):
    # Guards the test above: the payload does create the marker when loaded unsafely.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Exploit(marker)))
    assert marker.exists()


def test_truncated_model_on_init_from(files, tmp_path):
    data = (files / "model.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 3])
    arguments = ["train", "--train-file", "ethanol.xyz", "--init-from", str(path), "--output", str(tmp_path / "run")]
    result = run_cli(*arguments, cwd=files)
    assert_user_error(result, f"{path} could not be read as a model file", "truncated")
