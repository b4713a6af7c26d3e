"""The Engine port every backend implements."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobResult
from studio_worker.domain.tasks import JobOfferClaim

Progress = Callable[[float, str], None]  # fraction 0..1, short note


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
