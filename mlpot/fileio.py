"""Writing files atomically and loading torch files without running code from them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mlpot.errors import ModelFileError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` with torch.save to a temporary file in the same folder, then rename it.

    A reader, or a run killed mid-write, sees either the old complete file or the new complete
    file, never a partial one: os.replace is atomic on POSIX file systems and on Windows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a file saved with torch.save without running any code from it (``weights_only=True``).

    Raises ModelFileError for a missing, truncated or corrupted file, or one that needs pickled
    code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        text = str(error)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise ModelFileError(
                f"{path}: rejected, because loading it would run code it contains; mlpot files hold only "
                "tensors and plain values. Do not load files from untrusted sources"
            ) from None
        raise ModelFileError(
            f"{path}: truncated or corrupted ({type(error).__name__}); it cannot be loaded. "
            "Restore it from a copy or retrain"
        ) from None
