"""Create the virtual environments of MACE and SchNetPack that the benchmark scripts compare with.

Usage: python scripts/benchmark_setup.py --peer-venvs DIR [--packages mace,schnetpack]

Creates DIR/mace and DIR/schnetpack, each with its own torch, so that the peers' pinned
dependencies never touch mlpot's environment. Records the install time and size of each in
DIR/setup.json. Versions:

- torch: ``--torch`` (default torch==2.13.0, the version the benchmark was written against).
  It is installed first and held by a pip constraint, so no later step can swap it for another
  build.
- MACE: mace-torch 0.3.16 with its declared dependencies (it pins e3nn 0.4.4).
- SchNetPack: schnetpack 2.1.1 installed without dependencies, then its declared dependencies
  except two. It pins sympy<=1.12, while torch 2.13 needs sympy>=1.13.3, so pip cannot satisfy
  both and backtracks to other torch builds; schnetpack uses sympy only for Clebsch-Gordan
  coefficients of SO3net, which sympy 1.14 provides unchanged. pre-commit and black, also
  declared, are development tools that nothing imports at run time. bench/workers/spk_compat.py
  and spk_train.py work around the torch 2.13 incompatibilities left in schnetpack 2.1.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MACE_REQUIREMENTS = ["mace-torch==0.3.16"]
SCHNETPACK = "schnetpack==2.1.1"
#: Requires-Dist of schnetpack 2.1.1 less sympy's upper bound, pre-commit and black.
SCHNETPACK_DEPENDENCIES = [
    "numpy>=2.0.0",
    "sympy",
    "ase>=3.21",
    "h5py",
    "pyyaml",
    "hydra-core>=1.1.0",
    "pytorch-lightning>=2.0.0",
    "torchmetrics",
    "hydra-colorlog>=1.1.0",
    "rich",
    "fasteners",
    "dirsync",
    "torch-ema",
    "matscipy>=1.1.0",
    "tensorboard>=2.17.1",
    "tensorboardX>=2.6.2.2",
    "tqdm",
    "protobuf",
]


def pip(venv: Path, *arguments: str) -> None:
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", *arguments]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def folder_size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink()) / 1e6


def create(name: str, venvs: Path, torch_requirement: str) -> dict:
    """Create and fill one environment; return its install seconds and size."""
    venv = venvs / name
    if venv.exists():
        raise SystemExit(f"error: {venv} exists; remove it first or choose another --peer-venvs folder")
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip(venv, torch_requirement)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(torch_requirement + "\n")
    if name == "mace":
        pip(venv, "-c", constraints.name, *MACE_REQUIREMENTS)
    else:
        pip(venv, "--no-deps", SCHNETPACK)
        pip(venv, "-c", constraints.name, *SCHNETPACK_DEPENDENCIES)
    Path(constraints.name).unlink()
    seconds = round(time.monotonic() - start, 1)
    return {"seconds": seconds, "size_mb": round(folder_size_mb(venv), 1), "torch": torch_requirement}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-venvs", type=Path, required=True, help="folder that receives mace/ and schnetpack/")
    parser.add_argument("--packages", default="mace,schnetpack", help="comma-separated subset of mace, schnetpack")
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement of both environments")
    args = parser.parse_args()
    names = [name.strip() for name in args.packages.split(",") if name.strip()]
    unknown = [name for name in names if name not in ("mace", "schnetpack")]
    if unknown:
        raise SystemExit(f"error: unknown packages {unknown}; expected mace and/or schnetpack")
    args.peer_venvs.mkdir(parents=True, exist_ok=True)
    summary_path = args.peer_venvs / "setup.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name in names:
        summary[name] = create(name, args.peer_venvs, args.torch)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"{name}: installed in {summary[name]['seconds']:.0f} s, {summary[name]['size_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
