"""The one-job gate (behaviour §5): one GPU job at a time across every competitor.

Competitors (studio offers, local inference, the updater's install) `try_reserve` the
gate. One competitor may also queue as the gate's *next* holder (`reserve_next`): from
then on nobody else gets the gate, and the release of the current holder hands it over
directly. The updater uses that, so a steady stream of jobs cannot keep an update waiting
forever (each offer would otherwise find the slot free before the updater's next look).
"""

from __future__ import annotations

import threading


class JobGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: str | None = None
        self._next: str | None = None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._holder is not None

    @property
    def holder(self) -> str | None:
        with self._lock:
            return self._holder

    @property
    def next_holder(self) -> str | None:
        with self._lock:
            return self._next

    def try_reserve(self, holder: str) -> bool:
        """Compare-and-swap: True when the gate was free (and nobody else is queued as its
        next holder) and is now held by `holder`."""
        with self._lock:
            if self._holder is not None or self._next not in (None, holder):
                return False
            self._holder = holder
            if self._next == holder:
                self._next = None
            return True

    def reserve_next(self, holder: str) -> bool:
        """Take the gate now if it is free, else queue as its next holder (one at a time).

        True when `holder` holds the gate on return. Otherwise it is handed to `holder`
        by the current holder's `release` (if no one else was queued first); poll `holder`.
        """
        with self._lock:
            if self._holder is None and self._next in (None, holder):
                self._holder, self._next = holder, None
                return True
            if self._holder == holder:
                return True
            if self._next is None:
                self._next = holder
            return False

    def cancel_next(self, holder: str) -> None:
        """Leave the queue (a no-op unless `holder` is the queued next holder)."""
        with self._lock:
            if self._next == holder:
                self._next = None

    def release(self, holder: str) -> None:
        with self._lock:
            if self._holder == holder:
                self._holder, self._next = self._next, None
