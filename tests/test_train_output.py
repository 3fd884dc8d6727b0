"""What `mlpot train` prints: warnings, log lines of DDP ranks, and the progress bar."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpot.config import Config
from mlpot.training.run import build_trainer, show_progress_bar

REPOSITORY = Path(__file__).resolve().parents[1]

#: A script that configures logging as ``mlpot`` does, then logs and warns once each.
LOG_SCRIPT = """
import logging
import warnings
from mlpot.cli.main import configure_logging
from mlpot.models.statistics import StatisticsWarning

configure_logging(debug=False)
logging.getLogger("mlpot.example").info("reading the data")
warnings.warn("the energies look odd", StatisticsWarning)
"""


def run_script(**variables: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), **variables}
    for name in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        if name not in variables:
            environment.pop(name, None)
    return subprocess.run([sys.executable, "-c", LOG_SCRIPT], capture_output=True, text=True, env=environment, timeout=120)


def test_warning_line_has_no_source():
    result = run_script()
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "WARNING: StatisticsWarning: the energies look odd" in lines
    assert "warnings.warn" not in result.stderr
    assert "<string>" not in result.stderr


def test_rank_zero_logs_info():
    result = run_script(LOCAL_RANK="0")
    assert "INFO: reading the data" in result.stderr.splitlines()


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"])
def test_other_ranks_log_warnings_only(variable):
    result = run_script(**{variable: "1"})
    assert result.returncode == 0, result.stderr
    assert "reading the data" not in result.stderr
    assert "WARNING: StatisticsWarning: the energies look odd" in result.stderr.splitlines()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("configured", "terminal", "expected"), [
    (None, True, True),
    (None, False, False),
    (True, False, True),
    (False, True, False),
])  # fmt: skip
def test_progress_bar_choice(monkeypatch, configured, terminal, expected):
    monkeypatch.setattr(sys, "stdout", Terminal() if terminal else io.StringIO())
    config = Config()
    config.training.progress_bar = configured
    assert show_progress_bar(config) is expected


def test_trainer_without_terminal_has_no_bar(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    config = Config()
    config.training.device = "cpu"
    trainer = build_trainer(config, tmp_path)
    assert trainer.progress_bar_callback is None


def test_progress_bar_flag_alone_means_true():
    from mlpot.cli.main import build_parser
    from mlpot.cli.train import build_config

    args = build_parser().parse_args(["train", "--train-file", "x.xyz", "--progress-bar"])
    assert build_config(args).training.progress_bar is True
