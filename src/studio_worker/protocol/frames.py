"""Every WebSocket frame of protocol §3.3-§3.4, both directions, and their codec.

Frames are JSON text objects tagged by `type`. Decoding never trusts the peer: anything
that is not a known frame becomes a `FrameError` with a readable reason.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.domain.logs import LogEntry
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.domain.wire import WireModel


class RejectCode(StrEnum):
    BUSY = "busy"
    PAUSED = "paused"


class WorkerErrorCode(StrEnum):
    AUTH_FAILED = "auth_failed"
    PROTOCOL_VIOLATION = "protocol_violation"
    DUPLICATE_WORKER = "duplicate_worker"
    WORKER_DELETED = "worker_deleted"
    INTERNAL_ERROR = "internal_error"


# ---- worker -> studio -------------------------------------------------------------


class Hello(WireModel):
    type: Literal["hello"] = "hello"
    auth_token: str
    capabilities: WorkerCapabilities


class Heartbeat(WireModel):
    type: Literal["heartbeat"] = "heartbeat"
    capabilities: WorkerCapabilities
    current_job_id: str | None = None


class Accept(WireModel):
    type: Literal["accept"] = "accept"
    job_id: str


class Reject(WireModel):
    type: Literal["reject"] = "reject"
    job_id: str
    reason: str
    code: RejectCode | None = None


class CompleteJson(WireModel):
    type: Literal["completeJson"] = "completeJson"
    job_id: str
    result: Any
    prompt: str | None = None

    def to_wire(self) -> dict[str, Any]:
        # `result` is any JSON value, null and nested nulls included: never pruned. The
        # other fields are plain strings, so the dict is written out directly (this is
        # every JSON job's result frame; a generic model dump costs more than the rest).
        wire: dict[str, Any] = {"type": self.type, "jobId": self.job_id, "result": self.result}
        if self.prompt is not None:
            wire["prompt"] = self.prompt
        return wire


class Fail(WireModel):
    type: Literal["fail"] = "fail"
    job_id: str
    error: str
    retryable: bool


class LogBatch(WireModel):
    type: Literal["logBatch"] = "logBatch"
    entries: list[LogEntry]


class ReadyForMore(WireModel):
    """In the contract but never sent by a compatible worker (protocol §3.3)."""

    type: Literal["readyForMore"] = "readyForMore"


WorkerFrame = Annotated[
    Hello | Heartbeat | Accept | Reject | CompleteJson | Fail | LogBatch | ReadyForMore,
    Field(discriminator="type"),
]

# ---- studio -> worker -------------------------------------------------------------


class Welcome(WireModel):
    type: Literal["welcome"] = "welcome"
    worker_id: str
    server_time: str


class Offer(WireModel):
    type: Literal["offer"] = "offer"
    claim: JobOfferClaim


class HeartbeatAck(WireModel):
    type: Literal["heartbeatAck"] = "heartbeatAck"


class CompleteAck(WireModel):
    type: Literal["completeAck"] = "completeAck"
    job_id: str


class FailAck(WireModel):
    type: Literal["failAck"] = "failAck"
    job_id: str


class ErrorFrame(WireModel):
    type: Literal["error"] = "error"
    code: WorkerErrorCode
    message: str


StudioFrame = Annotated[
    Welcome | Offer | HeartbeatAck | CompleteAck | FailAck | ErrorFrame,
    Field(discriminator="type"),
]

_WORKER_FRAMES: TypeAdapter[WorkerFrame] = TypeAdapter(WorkerFrame)
_STUDIO_FRAMES: TypeAdapter[StudioFrame] = TypeAdapter(StudioFrame)


class FrameError(ValueError):
    """A text frame that is not a known frame of the expected direction."""

    def __init__(self, reason: str, *, offer_job_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set when the frame is an `offer` whose claim is unreadable but names its job:
        # the session can then fail that job instead of leaving it hanging.
        self.offer_job_id = offer_job_id


def encode(frame: WireModel) -> str:
    return json.dumps(frame.to_wire(), separators=(",", ":"), ensure_ascii=False)


def _parse_object(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes):
        raise FrameError("binary frames are not part of the protocol")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FrameError(f"frame is not JSON: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # nesting too deep, an integer too long
        raise FrameError(f"frame is not readable JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise FrameError("frame is not a JSON object")
    if not isinstance(data.get("type"), str):
        raise FrameError("frame has no string `type`")
    return data


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "frame"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def decode_studio_frame(text: str | bytes) -> StudioFrame:
    data = _parse_object(text)
    try:
        return _STUDIO_FRAMES.validate_python(data)
    except ValidationError as exc:
        job_id = None
        claim = data.get("claim")
        if data["type"] == "offer" and isinstance(claim, dict):
            raw = claim.get("jobId")
            job_id = raw if isinstance(raw, str) and raw else None
        raise FrameError(
            f"unreadable `{data['type']}` frame: {_describe(exc)}", offer_job_id=job_id
        ) from None


def decode_worker_frame(text: str | bytes) -> WorkerFrame:
    data = _parse_object(text)
    try:
        return _WORKER_FRAMES.validate_python(data)
    except ValidationError as exc:
        raise FrameError(f"unreadable `{data['type']}` frame: {_describe(exc)}") from None
