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

    A reader, or a run killed mid-write, finds either the old complete file or the new complete
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


#: Parts of torch's UnpicklingError messages that mean a pickled object other than tensors and
#: plain containers was refused, as worded by torch 2.13.
_REJECTION_MARKERS = ("GLOBAL ", "reduce for unrecognized function", "allowlisted", "Can only ")


def rejected_object(error: Exception) -> str | None:
    """Return torch's reason when ``torch.load(weights_only=True)`` refused a pickled object, else None.

    torch raises the same UnpicklingError for a file that names a forbidden class or function
    and for bytes that are not a pickle at all ("Unsupported operand"). Only the first case means
    that the file contains code; the second is a corrupted or foreign file. The reason is cut
    before torch's advice on how to allow the object anyway.
    """
    for line in str(error).splitlines():
        text = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if any(marker in text for marker in _REJECTION_MARKERS):
            return text.split(" Please ")[0].rstrip(".")
    return None


def load_failure_reason(error: Exception) -> str:
    """Return a one-line reason why torch.load failed, without torch's advice to set weights_only=False.

    That advice would run the file's code, so it must not reach a user who has a bad file.
    """
    reason = rejected_object(error)
    if reason is not None:
        return reason
    lines = [line.strip() for line in str(error).splitlines() if "unsupported" in line.lower()]
    if lines:
        return lines[0].rstrip(".")
    return f"{type(error).__name__}: {error}"


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a file saved with torch.save without running any code from it (``weights_only=True``).

    Raises ModelFileError for a missing, truncated or corrupted file, or one that needs pickled
    code to load.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; give the path of a file")
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        reason = rejected_object(error)
        if reason is not None:
            raise ModelFileError(
                f"{path}: rejected, because loading it would run code it contains ({reason}); mlpot files hold "
                "only tensors and plain values. Nothing in it was run. Do not load files from untrusted sources"
            ) from None
        raise ModelFileError(
            f"{path}: truncated or corrupted ({load_failure_reason(error)}); it cannot be loaded. "
            "Restore it from a copy or retrain"
        ) from None
