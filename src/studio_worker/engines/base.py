"""The Engine port every backend implements."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobResult
from studio_worker.domain.tasks import JobOfferClaim

Progress = Callable[[float, str], None]  # fraction 0..1, short note

PROGRESS_EVERY_S = 0.25


class ThrottledProgress:
    """An engine's progress at most every `every_s` (forced calls always pass), clamped."""

    def __init__(self, progress: Progress, every_s: float = PROGRESS_EVERY_S) -> None:
        self._progress = progress
        self._every_s = every_s
        self._last = 0.0

    def __call__(self, fraction: float, note: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self._every_s:
            self._last = now
            self._progress(max(0.0, min(1.0, fraction)), note)


class Engine(Protocol):
    """A blocking backend. `run` is called off the event loop, one job at a time."""

    @property
    def name(self) -> str:
        """Internal name used in messages: `synthetic`, `llama`, `sdcpp`, …"""
        ...

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        """Advertised model ids per kind (protocol §4.1)."""
        ...

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        """Produce the result or raise `JobError` (or any exception: a crash)."""
        ...
