"""The one-job gate (behaviour §5): one GPU job at a time across every competitor."""

from __future__ import annotations

import threading


class JobGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: str | None = None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._holder is not None

    @property
    def holder(self) -> str | None:
        with self._lock:
            return self._holder

    def try_reserve(self, holder: str) -> bool:
        """Compare-and-swap: True when the gate was free and is now held by `holder`."""
        with self._lock:
            if self._holder is not None:
                return False
            self._holder = holder
            return True

    def release(self, holder: str) -> None:
        with self._lock:
            if self._holder == holder:
                self._holder = None
