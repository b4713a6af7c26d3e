"""The registration state machine (protocol §6, §2.1-§2.2), pure.

The caller owns I/O: it asks `next_call()` what HTTP call to make (at most one per tick),
makes it, and feeds the answer back. Randomness and time come in as arguments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class RegState(StrEnum):
    PRISTINE = "pristine"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The persisted registration pieces (config keys of the same names)."""

    install_id: str | None = None
    registration_request_id: str | None = None
    registration_secret: str | None = None
    worker_id: str | None = None
    auth_token: str | None = None

    @property
    def approved(self) -> bool:
        return bool(self.worker_id) and bool(self.auth_token)


@dataclass(frozen=True, slots=True)
class PostRequest:
    install_id: str
    secret_hash: str


@dataclass(frozen=True, slots=True)
class PollRequest:
    request_id: str
    secret: str


Call = PostRequest | PollRequest


def secret_hash(secret: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 secret: all the studio ever sees of it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def format_install_id(raw16: bytes) -> str:
    """16 random bytes as lowercase 8-4-4-4-12 hex (no UUID version bits, as upstream)."""
    if len(raw16) != 16:
        raise ValueError("install id needs 16 bytes")
    h = raw16.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RegistrationMachine:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.state = (
            RegState.APPROVED
            if creds.approved
            else (RegState.PENDING if creds.registration_request_id else RegState.PRISTINE)
        )
        self.since: str | None = None
        self.reason = ""

    def prepare(self, new_install_id: str, new_secret: str) -> bool:
        """Fill in a missing install id / secret before any HTTP. True when creds changed."""
        creds = self.creds
        if not creds.install_id:
            creds = replace(creds, install_id=new_install_id)
        if not creds.registration_request_id and not creds.registration_secret:
            creds = replace(creds, registration_secret=new_secret)
        changed = creds != self.creds
        self.creds = creds
        return changed

    def next_call(self) -> Call | None:
        if self.state in (RegState.APPROVED, RegState.REJECTED):
            return None
        creds = self.creds
        if not creds.install_id or not creds.registration_secret:
            raise RuntimeError("prepare() must run before next_call()")
        if creds.registration_request_id:
            return PollRequest(creds.registration_request_id, creds.registration_secret)
        return PostRequest(creds.install_id, secret_hash(creds.registration_secret))

    def post_succeeded(self, request_id: str, now: str) -> None:
        self.creds = replace(self.creds, registration_request_id=request_id)
        self.state = RegState.PENDING
        self.since = now

    def poll_answered(self, status: int, body: Any, now: str) -> None:
        """Feed a poll's HTTP status and JSON body (None if unreadable)."""
        if status == 404:
            self._clear_request()
            self.state = RegState.PRISTINE
            self.since = None
            return
        if not 200 <= status < 300 or not isinstance(body, dict):
            self._keep_pending(now)  # transient: poll again next tick
            return
        decision = body.get("status")
        if decision == "approved":
            worker_id, token = body.get("workerId"), body.get("authToken")
            if not isinstance(worker_id, str) or not isinstance(token, str) or not worker_id:
                self._keep_pending(now)
                return
            self.creds = replace(self.creds, worker_id=worker_id, auth_token=token)
            self._clear_request()
            self.state = RegState.APPROVED
        elif decision == "rejected":
            reason = body.get("reason")
            self.reason = reason if isinstance(reason, str) else ""
            self._clear_request()
            self.state = RegState.REJECTED
        else:
            self._keep_pending(now)

    def reset(self) -> None:
        """`register --reset` / the UI: forget everything, the install id included."""
        self.creds = Credentials()
        self.state = RegState.PRISTINE
        self.since = None
        self.reason = ""

    def snapshot(self) -> dict[str, str]:
        """The tagged object of protocol §4.6."""
        if self.state is RegState.PENDING:
            return {
                "state": "pending",
                "requestId": self.creds.registration_request_id or "",
                "since": self.since or "",
            }
        if self.state is RegState.REJECTED:
            return {"state": "rejected", "reason": self.reason}
        return {"state": self.state.value}

    def _keep_pending(self, now: str) -> None:
        self.state = RegState.PENDING
        if self.since is None:
            self.since = now  # first seen pending; never reset on later polls (0.4.9 fix)

    def _clear_request(self) -> None:
        self.creds = replace(self.creds, registration_request_id=None, registration_secret=None)


REJECTED_MESSAGE = (
    "registration rejected by the studio operator: {reason}.  Run `studio-worker register "
    "--reset` to clear local state and submit a fresh request."
)
