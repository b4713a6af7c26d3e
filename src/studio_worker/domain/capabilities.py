"""`WorkerCapabilities` (protocol §4.1): sent in hello, every heartbeat and register-request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.wire import WireModel

UserPresence = Literal["idle", "active"]


class WorkerCapabilities(WireModel):
    machine_name: str
    username: str
    agent_version: str
    engine: str
    vram_total_gb: float
    vram_threshold_gb: float
    auto_enabled: bool
    auto_start: bool = True
    auto_update: bool = True
    start_minimised: bool = True
    only_when_idle: bool = False
    user_presence: UserPresence | None = None
    supported_models: list[str] = Field(default_factory=list)
    task_kinds: list[TaskKind] = Field(default_factory=list)
    supported_models_per_kind: dict[TaskKind, list[str]] = Field(default_factory=dict)


def models_per_kind(per_kind: Mapping[TaskKind, Sequence[str]]) -> dict[TaskKind, list[str]]:
    """Per-kind ids in TaskKind order, each list sorted and de-duplicated."""
    return {kind: sorted(set(per_kind[kind])) for kind in TaskKind if kind in per_kind}


def flat_models(per_kind: Mapping[TaskKind, Sequence[str]]) -> list[str]:
    """`supportedModels`: the flat, sorted, de-duplicated union of every kind's ids."""
    return sorted({model for ids in per_kind.values() for model in ids})
