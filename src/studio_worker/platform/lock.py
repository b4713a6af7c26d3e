"""The single-daemon lock (behaviour §1.1): `daemon.lock` + `daemon.pid` next to the config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO


class DaemonLock:
    def __init__(self, lock_path: Path, pid_path: Path) -> None:
        self._lock_path = lock_path
        self._pid_path = pid_path
        self._handle: IO[bytes] | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another one does."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self._lock_path, "a+b")  # noqa: SIM115 - held for the process lifetime
        try:
            _lock(handle)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        self._pid_path.write_text(f"{os.getpid()}\n", encoding="ascii")
        return True

    def release(self) -> None:
        if self._handle is None:
            return
        try:
            _unlock(self._handle)
        finally:
            self._handle.close()
            self._handle = None
            self._pid_path.unlink(missing_ok=True)


if sys.platform == "win32":
    import msvcrt

    def _lock(handle: IO[bytes]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(handle: IO[bytes]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
