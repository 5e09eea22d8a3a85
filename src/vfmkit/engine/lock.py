"""One training at a time per run folder: an exclusive ``fcntl.flock`` on ``<run>/.lock``.

The lock belongs to the process: the kernel drops it when the process ends in any way (kill -9 included), so a
stale lock never blocks a resume. Where ``fcntl`` does not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from vfmkit.errors import VfmError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunLock:
    """Hold ``<run_dir>/.lock`` exclusively; :meth:`acquire` refuses when another process trains in the folder."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    def acquire(self) -> RunLock:
        """Take the lock.

        Raises:
            VfmError: another process holds it (its pid is named).
        """
        if fcntl is None:
            return self
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise VfmError(
                f"run folder {self.path.parent} is in use by another training (pid {owner}); wait for it to finish, "
                "or give this run another name (name=...) or exist_ok=false"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; it is only a handle)."""
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
