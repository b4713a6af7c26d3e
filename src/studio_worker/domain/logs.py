"""`LogEntry` (protocol §4.2) and its timestamp format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from studio_worker.domain.wire import WireModel

LogLevel = Literal["info", "warn", "error"]


def rfc3339_millis(moment: datetime) -> str:
    """`2026-10-07T09:14:03.512Z`: UTC, milliseconds, `Z`."""
    # isoformat is C code (strftime costs several times more; every log line has a ts)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class LogEntry(WireModel):
    ts: str
    level: LogLevel
    category: str
    message: str
    job_id: str | None = None
