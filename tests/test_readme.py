"""The README's commands, the CI script and the generated config reference stay in step."""

from __future__ import annotations

import re
from pathlib import Path

from mlpot.config import reference_markdown

REPOSITORY = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPOSITORY / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_readme_quick_start_has_two_commands():
    quick_start = (REPOSITORY / "README.md").read_text().split("## Quick start")[1].split("### ")[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, flags=re.S)
    assert len(commands) == 2
    assert commands[0].endswith("mlpot train")
    assert "pytest" in commands[1]


def test_ci_runs_readme_test_command_verbatim():
    test_command = next(command for command in readme_commands() if "pytest" in command)
    ci_lines = (REPOSITORY / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_config_reference_matches_code():
    written = (REPOSITORY / "docs" / "config.md").read_text()
    assert written == reference_markdown(), "regenerate with: python -m mlpot.config > docs/config.md"
