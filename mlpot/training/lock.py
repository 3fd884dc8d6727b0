"""The lock file that keeps two trainings out of one run folder.

Two trainings in one folder would overwrite each other's checkpoints, logs and model.pt. The
rank-0 process of a training therefore creates ``RUN/.lock`` with ``O_CREAT | O_EXCL``, which
fails when the file exists, so exactly one of two processes that start at once gets it. The file
contains the owner's process id and host name. A lock whose owner no longer runs on this host is
stale, left by a killed run, and is taken over with a warning. A lock from another host cannot be
checked, so it blocks until the user deletes it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlpot.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


@dataclass(frozen=True)
class LockOwner:
    """Process id and host name of the process that holds a lock."""

    pid: int
    host: str

    @classmethod
    def current(cls) -> LockOwner:
        """Return the owner entry of this process."""
        return cls(os.getpid(), socket.gethostname())

    def is_running(self) -> bool:
        """Return whether the owner may still run: always true for another host."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the process exists but belongs to another user
            return True
        return True


def read_owner(path: Path) -> LockOwner | None:
    """Return the owner that the lock file ``path`` names, or None when it is missing or unreadable."""
    try:
        values = json.loads(path.read_text())
        return LockOwner(int(values["pid"]), str(values["host"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


class RunLock:
    """The lock of one run folder; a context manager that holds it for the ``with`` block.

    ``advice`` ends the first sentence of the error for a folder in use. :meth:`acquire` creates
    the folder when it does not exist. :meth:`release` removes the lock
    file, and also the folder when :meth:`acquire` created it and nothing else was written there,
    so a run that fails before it starts leaves no empty folder behind.
    """

    def __init__(self, folder: str | Path, advice: str = "wait for it or choose another --output"):
        self.folder = Path(folder)
        self.advice = advice
        self.path = self.folder / LOCK_NAME
        self.owner = LockOwner.current()
        self.held = False
        self.created_folder = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        """Create the lock file, taking over a stale one.

        Raises:
            ConfigError: another process holds the lock; the message names it.
        """
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.created_folder = True
        # Three attempts: a stale lock removed in one leaves the way free for the next, unless
        # another process takes it in between, which the next attempt then reports.
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = read_owner(self.path)
                if owner is None and not self.path.exists():
                    continue  # released since the open
                if owner is None or owner.is_running():
                    raise self._in_use_error(owner) from None
                self._remove_stale(owner)
                continue
            with os.fdopen(descriptor, "w") as stream:
                json.dump({"pid": self.owner.pid, "host": self.owner.host}, stream)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            self.held = True
            return
        raise self._in_use_error(read_owner(self.path))

    def release(self) -> None:
        """Remove the lock file if this process holds it; do nothing otherwise."""
        if not self.held:
            return
        self.held = False
        # After the races that _remove_stale describes, the file may name another process.
        if read_owner(self.path) == self.owner:
            self.path.unlink(missing_ok=True)
        if self.created_folder:
            try:
                self.folder.rmdir()  # succeeds only when the folder is empty
            except OSError:
                pass

    def _remove_stale(self, owner: LockOwner) -> None:
        """Remove the lock of ``owner``, a process that no longer runs, unless another replaced it.

        The lock is first renamed to a name of this process's own, so that of two processes that
        both found it stale, only one removes it. If the renamed file names another owner, a
        third process took the lock in the meantime, and it is put back.
        """
        claimed = self.path.with_name(f"{LOCK_NAME}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(self.path, claimed)
        except FileNotFoundError:
            return  # another process removed it first
        if read_owner(claimed) != owner:
            try:
                os.link(claimed, self.path)
            except OSError:
                # NOTE: a fourth process created a lock meanwhile, or the file system has no hard
                # links; the lock of the third process is then lost.
                pass
            claimed.unlink(missing_ok=True)
            return
        claimed.unlink(missing_ok=True)
        logger.warning(
            "%s names process %d on this host, which no longer runs (a training that was killed); "
            "taking the lock over",
            self.path,
            owner.pid,
        )

    def _in_use_error(self, owner: LockOwner | None) -> ConfigError:
        if owner is None:
            return ConfigError(
                f"{self.folder} is locked by {self.path}, which names no process: another training may be "
                f"creating it right now. {self.advice.capitalize()}; if no training uses {self.folder}, "
                f"delete {self.path}"
            )
        if owner.host != socket.gethostname():
            return ConfigError(
                f"{self.folder} is in use by process {owner.pid} on host {owner.host}; {self.advice}. "
                f"mlpot cannot check a process on another host: if that training no longer "
                f"runs, delete {self.path}"
            )
        return ConfigError(
            f"{self.folder} is in use by process {owner.pid} on host {owner.host}; {self.advice}. "
            f"If that process is not an mlpot training, delete {self.path}"
        )
