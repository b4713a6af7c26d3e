"""The engine host's channel: how the child builds its engine, and the typed messages
(frozen dataclasses over a `multiprocessing` pipe) between the parent and the child."""

from __future__ import annotations

import importlib
import multiprocessing.connection
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_worker.domain.results import JobResult
from studio_worker.domain.tasks import JobOfferClaim, ModelSource
from studio_worker.engines.base import Engine

Connection = multiprocessing.connection.Connection


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """How the child builds its engine: `module.qualname(**kwargs)` (kwargs picklable)."""

    module: str
    qualname: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Engine:
        factory = getattr(importlib.import_module(self.module), self.qualname)
        engine: Engine = factory(**self.kwargs)
        return engine


# ---- messages: parent -> child ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunJob:
    seq: int
    claim: JobOfferClaim
    model_paths: Mapping[str, Path]


@dataclass(frozen=True, slots=True)
class Preload:
    """Load `source`'s model as a job of it would, without running one."""

    seq: int
    source: ModelSource
    model_paths: Mapping[str, Path]


@dataclass(frozen=True, slots=True)
class CancelJob:
    seq: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


# ---- messages: child -> parent ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    pid: int


@dataclass(frozen=True, slots=True)
class Broken:
    """The child could not build its engine (import error, missing library)."""

    reason: str


@dataclass(frozen=True, slots=True)
class JobProgress:
    seq: int
    fraction: float
    note: str


@dataclass(frozen=True, slots=True)
class LogLine:
    level: int
    logger: str
    message: str
    job_id: str | None


@dataclass(frozen=True, slots=True)
class JobDone:
    seq: int
    result: JobResult
    loads: int | None  # the engine's model-load counter, when it keeps one
    resident: tuple[str, ...] = ()  # the engine's `resident()` after the job


@dataclass(frozen=True, slots=True)
class JobFailed:
    seq: int
    message: str
    retryable: bool
    crashed: bool  # an unexpected exception rather than a classified JobError
    loads: int | None
    resident: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Preloaded:
    """The answer to a `Preload` that worked (one that did not is a `JobFailed`)."""

    seq: int
    loads: int | None
    resident: tuple[str, ...]


ToChild = RunJob | Preload | CancelJob | Stop
FromChild = Started | Broken | JobProgress | LogLine | JobDone | JobFailed | Preloaded
