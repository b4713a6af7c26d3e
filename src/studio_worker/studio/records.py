"""The studio's own rows (register requests, workers, jobs) and its id/token minting.

Plain dataclasses inside; `to_json()` gives the admin API's camelCase view.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.domain.tasks import JobOfferClaim, ModelSource


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class JobStatus(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# Which status a job may move to from which (the store refuses anything else).
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.OFFERED, JobStatus.FAILED}),
    JobStatus.OFFERED: frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE, JobStatus.FAILED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED, JobStatus.DONE, JobStatus.FAILED}),
    JobStatus.DONE: frozenset(),
    JobStatus.FAILED: frozenset(),
}

HELD = (JobStatus.OFFERED, JobStatus.RUNNING)
TERMINAL = (JobStatus.DONE, JobStatus.FAILED)


def now_iso() -> str:
    return utc_millis(datetime.now(UTC))


def utc_millis(moment: datetime) -> str:
    """`rfc3339_millis` for a UTC datetime, without strftime (the studio stamps several
    per job)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(prefix: str, nbytes: int = 8) -> str:
    return prefix + secrets.token_hex(nbytes)


def mint_token() -> str:
    return secrets.token_hex(32)


def token_hash(token: str) -> str:
    """Only this hash of a token is ever stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class RegisterRequestRecord:
    id: str
    install_id: str
    secret_hash: str
    capabilities: dict[str, Any]
    user_agent: str
    source_ip: str
    status: RequestStatus
    reason: str | None
    worker_id: str | None
    created_at: str
    decided_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "requestId": self.id,
            "installId": self.install_id,
            "status": self.status.value,
            "reason": self.reason,
            "workerId": self.worker_id,
            "userAgent": self.user_agent,
            "sourceIp": self.source_ip,
            "capabilities": self.capabilities,
            "createdAt": self.created_at,
            "decidedAt": self.decided_at,
        }


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: str
    install_id: str
    capabilities: dict[str, Any]
    created_at: str
    last_seen_at: str | None
    deleted_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "workerId": self.id,
            "installId": self.install_id,
            "capabilities": self.capabilities,
            "createdAt": self.created_at,
            "lastSeenAt": self.last_seen_at,
            "deleted": self.deleted_at is not None,
        }


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    kind: str
    model: str
    task: dict[str, Any]
    model_source: dict[str, Any]
    vram_gb_estimate: float
    game_id: str
    asset_name: str
    status: JobStatus
    attempts: int
    worker_id: str | None
    error: str | None
    result: Any
    result_path: str | None
    ext: str | None
    mime: str | None
    size: int | None
    prompt: str | None
    created_at: str
    updated_at: str
    finished_at: str | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def claim(self) -> JobOfferClaim:
        return JobOfferClaim.model_validate(
            {
                "jobId": self.id,
                "gameId": self.game_id,
                "assetName": self.asset_name,
                "model": self.model,
                "vramGbEstimate": self.vram_gb_estimate,
                "task": self.task,
                "modelSource": self.model_source,
            }
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobId": self.id,
            "kind": self.kind,
            "model": self.model,
            "task": self.task,
            "modelSource": self.model_source,
            "vramGbEstimate": self.vram_gb_estimate,
            "gameId": self.game_id,
            "assetName": self.asset_name,
            "status": self.status.value,
            "attempts": self.attempts,
            "workerId": self.worker_id,
            "error": self.error,
            "result": self.result,
            "prompt": self.prompt,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "finishedAt": self.finished_at,
        }
        if self.result_path is not None:
            out["resultFile"] = {"ext": self.ext, "mime": self.mime, "size": self.size}
        return out


def capabilities_json(caps: WorkerCapabilities) -> str:
    return json.dumps(caps.to_wire(), separators=(",", ":"))


def model_source_json(source: ModelSource) -> str:
    return json.dumps(source.to_wire(), separators=(",", ":"))
