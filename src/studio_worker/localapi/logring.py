"""A bounded ring of the worker's log lines with sequence numbers (`GET /daemon/logs`).

A logging handler on the root logger feeds it; every entry gets the next sequence number,
so a reader asks for what came after the last number it saw. An `after` larger than the
newest (the daemon restarted) answers the whole ring.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from studio_worker.domain.logs import rfc3339_millis

LOG_RING_CAP = 500

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


class LogRing(logging.Handler):
    def __init__(self, cap: int = LOG_RING_CAP, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._entries: deque[dict[str, Any]] = deque(maxlen=cap)
        self._seq = 0
        self._ring_lock = threading.Lock()

    @property
    def seq(self) -> int:
        with self._ring_lock:
            return self._seq

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        entry: dict[str, Any] = {
            "ts": rfc3339_millis(datetime.fromtimestamp(record.created, UTC)),
            "level": _LEVELS.get(record.levelno, "info"),
            "target": record.name,
            "message": message,
        }
        job_id = getattr(record, "job_id", None)
        if isinstance(job_id, str):
            entry["jobId"] = job_id
        with self._ring_lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)

    def since(self, after: int) -> tuple[list[dict[str, Any]], int]:
        """Entries newer than `after` and the newest sequence number."""
        with self._ring_lock:
            entries = list(self._entries)
            seq = self._seq
        if after > seq:
            return entries, seq
        return [e for e in entries if e["seq"] > after], seq

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        with self._ring_lock:
            return [e for e in self._entries if e.get("jobId") == job_id]
