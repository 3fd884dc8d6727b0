"""The documentation in docs/: its commands run, its links resolve, and its lists match the code.

The walkthrough tests run every ``bash`` and ``python`` block of docs/getting-started.md in
order, then the ``python`` blocks of docs/calculator.md, in one temporary folder that holds only
a link to the repository's data/. Blocks in other languages are not run: ``sh`` blocks install
packages, need a GPU or name the reader's own files, and ``yaml`` and ``text`` blocks show files
and output. ``mlpot`` and ``python`` resolve to the virtual
environment that runs the tests. Every process gets one torch thread: the CI cores are shared,
and on two busy cores a second thread made MD steps of a 15-atom molecule 20 to 45 times
slower.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlpot import units

REPOSITORY = Path(__file__).resolve().parents[1]
DOCS = REPOSITORY / "docs"
PAGES = sorted(DOCS.glob("*.md"))

#: A fenced code block that starts at the beginning of a line: its language and its text.
CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
#: A Markdown link or image: its target, without a title.
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: Seconds one documented block may take before the walkthrough fails.
BLOCK_TIMEOUT = 900


def code_blocks(page: Path, languages: tuple[str, ...]) -> list[tuple[str, str]]:
    """Return (language, code) of the fenced blocks of ``page`` in those languages, in order."""
    blocks = [(language, code) for language, code in CODE_BLOCK.findall(page.read_text())]
    return [(language, code) for language, code in blocks if language in languages]


def run_block(language: str, code: str, folder: Path) -> subprocess.CompletedProcess:
    """Run one documented block in ``folder`` with the test's virtual environment first on PATH."""
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["OMP_NUM_THREADS"] = "1"
    environment["MPLBACKEND"] = "Agg"
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    return subprocess.run(
        command, cwd=folder, env=environment, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )


def failure_report(language: str, code: str, result: subprocess.CompletedProcess) -> str:
    return (
        f"this {language} block exited with {result.returncode}:\n{code}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> tuple[Path, list]:
    """Run the blocks of getting-started.md in a fresh folder; return it and each block's result."""
    folder = tmp_path_factory.mktemp("walkthrough")
    (folder / "data").symlink_to(REPOSITORY / "data")
    results = []
    for language, code in code_blocks(DOCS / "getting-started.md", ("bash", "python")):
        result = run_block(language, code, folder)
        results.append((language, code, result))
        if result.returncode != 0:
            break
    return folder, results


@pytest.mark.slow
def test_getting_started_blocks_run(walkthrough):
    folder, results = walkthrough
    expected = len(code_blocks(DOCS / "getting-started.md", ("bash", "python")))
    assert expected >= 10
    for language, code, result in results:
        assert result.returncode == 0, failure_report(language, code, result)
    assert len(results) == expected


@pytest.mark.slow
def test_getting_started_outputs(walkthrough):
    folder, _ = walkthrough
    for name in (
        "runs/first/model.pt",
        "runs/first/config.yaml",
        "runs/first/parity/parity_forces.png",
        "frames_predicted.extxyz",
        "md.extxyz",
        "md.log",
        "runs/dipole/model.pt",
        "start_dipole.extxyz",
    ):
        assert (folder / name).is_file(), f"{name} was not written"


@pytest.mark.slow
def test_calculator_examples_run(walkthrough):
    folder, results = walkthrough
    assert all(result.returncode == 0 for _, _, result in results), "getting-started.md failed first"
    blocks = code_blocks(DOCS / "calculator.md", ("python",))
    assert len(blocks) >= 5
    for language, code in blocks:
        result = run_block(language, code, folder)
        assert result.returncode == 0, failure_report(language, code, result)


@pytest.mark.slow
def test_dipole_collapse_script(tmp_path):
    figure = tmp_path / "collapse.png"
    command = [
        sys.executable,
        str(REPOSITORY / "scripts" / "dipole_collapse.py"),
        *("--train-frames", "8", "--test-frames", "8", "--rotations", "4", "--steps", "40"),
        *("--output", str(figure)),
    ]
    environment = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    errors = dict(re.findall(r"^(\w+)\s+dipole component MAE ([0-9.]+) e·Å", result.stdout, flags=re.M))
    assert set(errors) == {"equivariant", "invariant", "zero"}
    assert float(errors["equivariant"]) < 0.5 * float(errors["invariant"])
    assert 1_000 < figure.stat().st_size < 200_000


def test_collapse_figure_committed_and_small():
    size = (DOCS / "figures" / "dipole_collapse.png").stat().st_size
    assert 1_000 < size < 200_000


def heading_anchors(page: Path) -> set[str]:
    """Return the anchors that GitHub gives the headings of ``page``."""
    anchors = set()
    for line in page.read_text().splitlines():
        match = re.match(r"#+ (.*)", line)
        if match:
            text = match.group(1).strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page):
    text = CODE_BLOCK.sub("", page.read_text())
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path_text, _, anchor = target.partition("#")
        path = (page.parent / path_text).resolve() if path_text else page
        assert path.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in heading_anchors(path), f"{page.name} links to {target}; no such heading"


def test_readme_links_every_page():
    readme = (REPOSITORY / "README.md").read_text()
    for page in PAGES:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_module_map_lists_every_module():
    design = (DOCS / "design.md").read_text()
    modules = sorted(REPOSITORY.glob("mlpot/**/*.py"))
    listed = set(re.findall(r"`(mlpot/[\w/]+\.py)`", design))
    for module in modules:
        name = module.relative_to(REPOSITORY).as_posix()
        if module.name == "__init__.py" and name != "mlpot/__init__.py":
            continue
        assert name in listed, f"docs/design.md has no line for {name}"
    for name in listed:
        assert (REPOSITORY / name).is_file(), f"docs/design.md lists {name}, which does not exist"


def unit_table() -> dict[str, list[str]]:
    """Return the accepted unit names of each quantity, from the table in docs/data.md."""
    table = {}
    for line in (DOCS / "data.md").read_text().splitlines():
        match = re.match(r"\| (energy|length|forces|stress|dipole|charge) \| [^|]+ \| (.+) \|$", line)
        if match:
            table[match.group(1)] = re.findall(r"`([^`]+)`", match.group(2))
    return table


def test_unit_table_names_convert():
    table = unit_table()
    assert set(table) == set(units.INTERNAL_UNITS)
    for quantity, names in table.items():
        for name in names:
            assert units.factor_to_internal(name, quantity) > 0, f"{name} ({quantity})"


@pytest.mark.parametrize(
    ("quantity", "known"),
    [
        ("energy", units._ENERGY),
        ("length", units._LENGTH),
        ("stress", units._PRESSURE),
        ("dipole", units._DIPOLE),
        ("charge", units._CHARGE),
    ],
)
def test_unit_table_lists_every_name(quantity, known):
    # Names are compared as mlpot normalises them, which maps "ang" and "angstrom" to "å".
    listed = {units._normalise(name) for name in unit_table()[quantity]}
    for name in known:
        assert units._normalise(name) in listed, f"docs/data.md does not list the {quantity} unit {name!r}"
