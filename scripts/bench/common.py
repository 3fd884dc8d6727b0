"""Paths, package environments, subprocesses with time and memory limits, and machine facts."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPTS = REPOSITORY / "scripts"

#: Packages compared, in table order.
PACKAGES = ("mlpot", "mace", "schnetpack")
#: Folder of each peer's virtual environment inside the folder given by --peer-venvs.
PEER_VENV_NAMES = {"mace": "mace", "schnetpack": "schnetpack"}
#: Environment variable read when --peer-venvs is not given.
PEER_VENVS_VARIABLE = "MLPOT_BENCH_VENVS"
#: Distribution name of each package, for its installed version.
DISTRIBUTIONS = {"mlpot": "mlpot", "mace": "mace-torch", "schnetpack": "schnetpack"}


class BenchmarkError(RuntimeError):
    """A benchmark step that cannot run as requested (missing environment, failed worker)."""


def peer_venvs_folder(value: str | None) -> Path | None:
    """Return the folder holding the peers' virtual environments, or None when none is set."""
    value = value or os.environ.get(PEER_VENVS_VARIABLE)
    return Path(value).resolve() if value else None


def python_of(package: str, venvs: Path | None) -> str:
    """Return the Python executable that runs ``package``.

    mlpot runs in the interpreter of the calling script. MACE and SchNetPack run in their own
    virtual environments under ``venvs`` (see scripts/benchmark_setup.py).
    """
    if package == "mlpot":
        return sys.executable
    if venvs is None:
        raise BenchmarkError(
            f"no environment for {package}: pass --peer-venvs DIR or set {PEER_VENVS_VARIABLE}, "
            "where DIR was made by scripts/benchmark_setup.py"
        )
    python = venvs / PEER_VENV_NAMES[package] / "bin" / "python"
    if not python.is_file():
        raise BenchmarkError(
            f"{python} not found: create the {package} environment with "
            f"`python scripts/benchmark_setup.py --peer-venvs {venvs}`, or leave {package} out with --packages"
        )
    return str(python)


def worker_environment(threads: int | None) -> dict[str, str]:
    """Environment of a worker process: ``scripts/`` importable, unbuffered output, thread count."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(SCRIPTS) + os.pathsep + environment.get("PYTHONPATH", "")
    environment["PYTHONUNBUFFERED"] = "1"
    environment.setdefault("MPLBACKEND", "Agg")
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
        environment["MKL_NUM_THREADS"] = str(threads)
        environment["MLPOT_BENCH_THREADS"] = str(threads)
    return environment


@dataclasses.dataclass
class ProcessResult:
    """Outcome of a worker process.

    ``lines`` contains each output line (stdout and stderr merged) with the seconds since the start
    at which it arrived. ``peak_rss_gb`` is the largest resident set size of the process tree
    seen by polling every 0.5 s, so a short spike can be missed.
    """

    command: list[str]
    returncode: int | None
    seconds: float
    lines: list[tuple[float, str]]
    timed_out: bool = False
    memory_exceeded: bool = False
    peak_rss_gb: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.memory_exceeded

    def tail(self, count: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-count:])

    def failure(self) -> str:
        """One-line reason for a failed run."""
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.memory_exceeded:
            return f"stopped at {self.peak_rss_gb:.1f} GB resident memory (over --memory-limit-gb)"
        return f"exited with code {self.returncode}"


def run_process(
    command: list[str],
    log_path: Path,
    cwd: Path | None = None,
    threads: int | None = None,
    timeout: float | None = None,
    memory_limit_gb: float | None = None,
    echo: bool = False,
) -> ProcessResult:
    """Run ``command``, stamping each output line with its arrival time, under time and memory limits.

    The process gets its own process group, so a timeout or the memory limit stops it with
    everything it started. All output is also written to ``log_path``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=worker_environment(threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    lines: list[tuple[float, str]] = []
    state = {"timed_out": False, "memory_exceeded": False, "peak": 0.0}

    def watch() -> None:
        while process.poll() is None:
            rss = process_tree_rss_gb(process.pid)
            state["peak"] = max(state["peak"], rss)
            if memory_limit_gb and rss > memory_limit_gb:
                state["memory_exceeded"] = True
                stop_group(process)
                return
            if timeout and time.monotonic() - start > timeout:
                state["timed_out"] = True
                stop_group(process)
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command) + "\n")
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            lines.append((time.monotonic() - start, line))
            log.write(line + "\n")
            log.flush()
            if echo:
                print(f"    {line}", flush=True)
    process.wait()
    watcher.join(timeout=2.0)
    return ProcessResult(
        command=command,
        returncode=process.returncode,
        seconds=time.monotonic() - start,
        lines=lines,
        timed_out=state["timed_out"],
        memory_exceeded=state["memory_exceeded"],
        peak_rss_gb=state["peak"],
    )


def stop_group(process: subprocess.Popen) -> None:
    """Send SIGTERM to the process group of ``process``, then SIGKILL if it is still alive after 10 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def process_tree_rss_gb(pid: int) -> float:
    """Resident memory in GB of ``pid`` and its descendants, read from /proc (0 where unreadable)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, ..., rss in pages is field 24 of stat (index 21 here).
        child, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(child)
        rss[child] = int(fields[21])
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 1e9


def last_json_line(result: ProcessResult, prefix: str) -> dict | None:
    """Return the JSON object of the last output line that starts with ``prefix``."""
    for _, line in reversed(result.lines):
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    return None


def package_version(package: str, python: str) -> str:
    """Return the installed version of ``package`` in the environment of ``python``."""
    code = f"import importlib.metadata as m; print(m.version({DISTRIBUTIONS[package]!r}))"
    try:
        output = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    except (subprocess.SubprocessError, OSError) as error:
        return f"unknown ({type(error).__name__})"
    return output.stdout.strip()


def torch_facts(python: str) -> dict[str, str]:
    """Return torch's version and default intra-op thread count in the environment of ``python``."""
    code = "import torch, json; print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads()}))"
    try:
        output = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        return json.loads(output.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as error:
        return {"torch": f"unknown ({type(error).__name__})", "threads": "unknown"}


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or what platform reports elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(threads: int | None) -> dict:
    """Facts about the machine and the run, stored with every result file."""
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1e6, 1)
    except OSError:
        pass
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "threads_requested": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
    }


def default_output(kind: str) -> Path:
    """Return runs/benchmarks/<kind>-<date-time>, a fresh folder in the ignored runs/."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPOSITORY / "runs" / "benchmarks" / f"{kind}-{stamp}"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def markdown_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """Render a Markdown table; ``align`` has one letter per column, l or r (default: l then r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if letter == "l" else "---:" for letter in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Turn the ``--mlpot-set KEY=VALUE`` arguments into config overrides of ``mlpot train``."""
    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise SystemExit(f"error: --mlpot-set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip().replace("-", "_")] = value.strip()
    return overrides
