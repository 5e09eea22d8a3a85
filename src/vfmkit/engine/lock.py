"""One training at a time per run folder: an exclusive POSIX record lock (``fcntl.lockf``) on ``<run>/.lock``.

The lock belongs to the process that took it: the kernel drops it when that process ends in any way (kill -9
included), and, unlike an ``flock``, it is not shared with children forked afterwards (DataLoader workers), which
may outlive a killed trainer by seconds; so a stale lock never blocks a resume, not even right after kill -9.

A record lock is released when the process closes ANY descriptor of the file, and a second ``lockf`` by the same
process succeeds, so this module keeps the one handle per locked file and refuses a second lock of the same folder
in the same process itself. Where ``fcntl`` does not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from vfmkit.errors import VfmError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_HELD: set[str] = set()
"""Resolved ``.lock`` paths this process holds."""


class RunLock:
    """Hold ``<run_dir>/.lock`` exclusively; :meth:`acquire` refuses when another training (another process, or
    this one) trains in the folder."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    def acquire(self) -> RunLock:
        """Take the lock and write this process's pid into the file.

        Raises:
            VfmError: another training holds it (its pid is named).
        """
        if fcntl is None:
            return self
        key = str(self.path.resolve())
        if key in _HELD:  # opening the file again would release this process's own lock when closed
            raise self._in_use(str(os.getpid()))
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EACCES or EAGAIN: held by another process
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise self._in_use(owner) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        _HELD.add(key)
        return self

    def _in_use(self, owner: str) -> VfmError:
        return VfmError(
            f"run folder {self.path.parent} is in use by another training (pid {owner}); wait for it to finish, "
            "or give this run another name (name=...) or exist_ok=false"
        )

    def release(self) -> None:
        """Drop the lock (the file stays; it is only a handle)."""
        if self._handle is not None:
            fcntl.lockf(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
            _HELD.discard(str(self.path.resolve()))

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
