"""The Engine port every backend implements."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobError, JobResult
from studio_worker.domain.tasks import JobOfferClaim, ModelSource

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


def check_cancel(cancel: threading.Event) -> None:
    """Raise the `cancelled` JobError once `cancel` is set (between two steps of a job)."""
    if cancel.is_set():
        raise JobError("cancelled", retryable=True)


def no_progress(fraction: float, note: str) -> None:
    """The progress sink of work that is not a job (a preload)."""


def resident_files(paths: Iterable[Path]) -> list[str]:
    """What `Engine.resident()` reports for the files of a loaded model: absolute paths."""
    return sorted({str(path) for path in paths})


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

    # -- residency: an engine keeps the last model it loaded (docs/engines.md) -----------

    def resident(self) -> list[str]:
        """The files of the model(s) held loaded now (absolute paths); empty when none."""
        ...

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        """Load `source`'s model as a job of it would, without running one (`JobError`
        when it cannot: the same messages a job would fail with)."""
        ...

    def unload(self) -> None:
        """Free what is loaded (the next job loads its model again)."""
        ...
