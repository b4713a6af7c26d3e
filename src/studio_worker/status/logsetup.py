"""The daemon's local log: one stderr line per record, secrets masked, cheap per line.

Breadcrumbs (a few per job) pass through here as well as the ship queue, so the per-record
cost is kept low: no caller-frame, thread or process lookup (nothing prints them) and the
date part of each line formatted once a second.
"""

from __future__ import annotations

import logging
import sys
import time

from studio_worker.config.redact import SecretRedactor

LINE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
QUIET = ("httpx", "httpcore", "websockets", "aiohttp.access")
"""Libraries whose info lines (a line per request or frame) are left out."""


class LineFormatter(logging.Formatter):
    """`%(asctime)s …` with the seconds part formatted once per second, not per line."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime(self.default_time_format, time.localtime(second)))
        return f"{self._second[1]},{int(record.msecs):03d}"


def setup_logging(redactor: SecretRedactor, level: int = logging.INFO) -> None:
    # Per record, logging would also look up the calling frame, the thread and the
    # process: no handler here prints them (the logging HOWTO's "Optimization" settings).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(LINE_FORMAT))
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
