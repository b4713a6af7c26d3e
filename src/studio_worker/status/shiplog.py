"""The log ship queue (behaviour §14.1): breadcrumbs bound for the studio as `logBatch`.

Capacity 5000. When full, the oldest `len + 2 - 5000` entries are dropped and a warn entry
`ship queue full (5000 entries); dropped <n> oldest` (category `logs`) is added. A batch
whose send failed goes back in front of newer entries, the whole capped again.

A push only stores the fields and the moment: the wire timestamp and the `LogEntry`
model are made when the batch is drained, once a second, not on a job's hot path.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from studio_worker.domain.logs import LogEntry, LogLevel, rfc3339_millis

LOG_SHIP_QUEUE_CAP = 5000

_PY_LEVEL = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


# (moment, level, category, message, job_id): an entry not yet made into a LogEntry.
_Raw = tuple[datetime, LogLevel, str, str, str | None]


def _entry(item: LogEntry | _Raw) -> LogEntry:
    if isinstance(item, LogEntry):
        return item
    moment, level, category, message, job_id = item
    # built here from typed values: nothing for validation to check
    return LogEntry.model_construct(
        ts=rfc3339_millis(moment), level=level, category=category, message=message, job_id=job_id
    )


class ShipQueue:
    def __init__(self, cap: int = LOG_SHIP_QUEUE_CAP, clock: Callable[[], datetime] = _now) -> None:
        if cap < 3:
            raise ValueError("ship queue capacity must be at least 3")
        self._cap = cap
        self._clock = clock
        self._items: deque[LogEntry | _Raw] = deque()
        self._lock = threading.Lock()  # engines and the tray push from other threads

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def push(self, level: LogLevel, category: str, message: str, job_id: str | None = None) -> None:
        entry: _Raw = (self._clock(), level, category, message, job_id)
        with self._lock:
            if len(self._items) >= self._cap:
                self._drop_oldest(len(self._items) + 2 - self._cap)
            self._items.append(entry)

    def drain(self, limit: int | None = None) -> list[LogEntry]:
        """Take the oldest entries, at most `limit` of them (all when None)."""
        with self._lock:
            if limit is None or limit >= len(self._items):
                items = list(self._items)
                self._items.clear()
            else:
                items = [self._items.popleft() for _ in range(limit)]
        return [_entry(item) for item in items]

    def requeue_front(self, batch: Sequence[LogEntry]) -> None:
        """Put a batch whose send failed back in front of what came since."""
        with self._lock:
            self._items.extendleft(reversed(batch))
            excess = len(self._items) - self._cap
            if excess > 0:
                self._drop_oldest(excess + 1)

    def _drop_oldest(self, count: int) -> None:
        for _ in range(min(count, len(self._items))):
            self._items.popleft()
        message = f"ship queue full ({self._cap} entries); dropped {count} oldest"
        self._items.append((self._clock(), "warn", "logs", message, None))


class Breadcrumbs:
    """`push_log`: a line for the local log and, queued, for the studio."""

    def __init__(self, queue: ShipQueue, logger: logging.Logger | None = None) -> None:
        self.queue = queue
        self._log = logger or log

    def __call__(
        self, level: LogLevel, category: str, message: str, job_id: str | None = None
    ) -> None:
        self.queue.push(level, category, message, job_id)
        extra = {"job_id": job_id} if job_id else {}
        self._log.log(_PY_LEVEL[level], "[%s] %s", category, message, extra=extra)
