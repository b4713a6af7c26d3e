"""Offer admission (protocol §3.7 steps 2-4), pure: first matching rule wins."""

from __future__ import annotations

from dataclasses import dataclass

from studio_worker.protocol.frames import RejectCode

REASON_PAUSED = "worker paused by operator"
REASON_NOT_IDLE = "only when idle: the person is using this computer"
REASON_BUSY = "worker already has an in-flight job"


@dataclass(frozen=True, slots=True)
class Admit:
    pass


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    code: RejectCode
    log: str  # completed with the job id by the caller: `rejecting offer <id>: <log>`


Verdict = Admit | Refuse

BUSY = Refuse(REASON_BUSY, RejectCode.BUSY, "worker is already busy")


def admit(*, paused: bool, only_when_idle: bool, presence: str | None, busy: bool) -> Verdict:
    if paused:
        return Refuse(REASON_PAUSED, RejectCode.PAUSED, "worker is paused")
    if only_when_idle and presence != "idle":
        return Refuse(
            REASON_NOT_IDLE,
            RejectCode.PAUSED,
            f"only when idle, and the person is {presence or 'unknown'}",
        )
    if busy:
        return BUSY
    return Admit()
