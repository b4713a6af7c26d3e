"""The WebSocket session as a pure state machine (protocol §3.2-§3.6).

Input: what happened on the socket (opened, a text frame, a close, an idle timeout, a
failed send, a stop request). Output: a list of actions for the I/O layer to carry out.
No sockets, no clocks, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.domain.logs import LogLevel
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.protocol.frames import (
    CompleteAck,
    ErrorFrame,
    FailAck,
    FrameError,
    HeartbeatAck,
    Hello,
    Offer,
    Welcome,
    WorkerErrorCode,
    decode_studio_frame,
)
from studio_worker.protocol.outcomes import EndKind, SessionEnd

CLOSE_NORMAL = 1000
CLOSE_AUTH_FAILED = 4001


class Phase(StrEnum):
    OPENING = "opening"  # socket up, hello not sent yet
    AWAITING_WELCOME = "awaiting_welcome"
    CONNECTED = "connected"
    ENDED = "ended"


# ---- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendHello:
    frame: Hello


@dataclass(frozen=True, slots=True)
class StartPumps:
    """Welcome arrived: start the heartbeat pump and the log shipper."""

    worker_id: str
    server_time: str


@dataclass(frozen=True, slots=True)
class HandleOffer:
    claim: JobOfferClaim


@dataclass(frozen=True, slots=True)
class RefuseUnreadableOffer:
    """An offer whose claim cannot be read, but that names its job: fail it terminally."""

    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class HeartbeatAcked:
    pass


@dataclass(frozen=True, slots=True)
class Log:
    level: LogLevel
    message: str
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class End:
    end: SessionEnd


Action = (
    SendHello
    | StartPumps
    | HandleOffer
    | RefuseUnreadableOffer
    | HeartbeatAcked
    | Log
    | Close
    | End
)


class SessionMachine:
    """One session attempt, from the upgrade to its end."""

    def __init__(self, auth_token: str, capabilities: WorkerCapabilities) -> None:
        self._auth_token = auth_token
        self._capabilities = capabilities
        self.phase = Phase.OPENING
        self.worker_id: str | None = None

    @property
    def reached_welcome(self) -> bool:
        return self.worker_id is not None

    # ---- events -------------------------------------------------------------------

    def opened(self) -> list[Action]:
        self._expect(Phase.OPENING)
        self.phase = Phase.AWAITING_WELCOME
        return [SendHello(Hello(auth_token=self._auth_token, capabilities=self._capabilities))]

    def text_received(self, text: str | bytes) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        try:
            frame = decode_studio_frame(text)
        except FrameError as exc:
            # Logged, and the session goes on (protocol §3.2 allows either).
            actions: list[Action] = [Log("warn", f"ignoring unreadable frame: {exc.reason}")]
            if exc.offer_job_id is not None and self.phase is Phase.CONNECTED:
                actions.append(RefuseUnreadableOffer(exc.offer_job_id, exc.reason))
            return actions
        handler = _TABLE.get((self.phase, type(frame)))
        if handler is None:
            when = "before welcome" if self.phase is Phase.AWAITING_WELCOME else "now"
            return [Log("warn", f"server sent unexpected frame {when}: {frame.type}")]
        return handler(self, frame)

    def closed(self, code: int | None, reason: str) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        if code == CLOSE_AUTH_FAILED:
            return self._end(EndKind.AUTH_FAILED, f"server closed 4001: {reason}")
        detail = (
            f"closed by server ({code}{': ' + reason if reason else ''})"
            if code
            else ("connection lost without a close frame")
        )
        return self._end(EndKind.DISCONNECTED, detail)

    def idle_timeout(self, seconds: float) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        return [
            Close(CLOSE_NORMAL, "session ended"),
            *self._end(EndKind.DISCONNECTED, f"no frame from the studio for {seconds:g}s"),
        ]

    def send_failed(self, what: str, error: str) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        return self._end(EndKind.ERROR, f"{what} send failed: {error}")

    def stop(self) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        return [Close(CLOSE_NORMAL, "session ended"), *self._end(EndKind.STOPPED, "stopped")]

    # ---- frame handlers -----------------------------------------------------------

    def _on_welcome(self, frame: Welcome) -> list[Action]:
        self.phase = Phase.CONNECTED
        self.worker_id = frame.worker_id
        return [
            Log("info", f"server welcomed {frame.worker_id} server_time={frame.server_time}"),
            StartPumps(frame.worker_id, frame.server_time),
        ]

    def _on_error_before_welcome(self, frame: ErrorFrame) -> list[Action]:
        if frame.code is WorkerErrorCode.AUTH_FAILED:
            close = Close(CLOSE_NORMAL, "auth failed")
            return [close, *self._error_end(frame)]
        return [Close(CLOSE_NORMAL, "protocol violation"), *self._error_end(frame)]

    def _on_error(self, frame: ErrorFrame) -> list[Action]:
        return [Close(CLOSE_NORMAL, "session ended"), *self._error_end(frame)]

    def _error_end(self, frame: ErrorFrame) -> list[Action]:
        log = Log("error", f"server error {frame.code.value}: {frame.message}")
        kind = EndKind.AUTH_FAILED if frame.code is WorkerErrorCode.AUTH_FAILED else EndKind.FATAL
        return [log, *self._end(kind, frame.message)]

    def _on_offer(self, frame: Offer) -> list[Action]:
        return [HandleOffer(frame.claim)]

    def _on_heartbeat_ack(self, _frame: HeartbeatAck) -> list[Action]:
        return [HeartbeatAcked()]

    def _on_complete_ack(self, frame: CompleteAck) -> list[Action]:
        return [Log("info", f"studio confirmed completion of job {frame.job_id}", frame.job_id)]

    def _on_fail_ack(self, frame: FailAck) -> list[Action]:
        return [Log("info", f"studio confirmed failure of job {frame.job_id}", frame.job_id)]

    # ---- helpers ------------------------------------------------------------------

    def _end(self, kind: EndKind, reason: str) -> list[Action]:
        self.phase = Phase.ENDED
        return [End(SessionEnd(kind, reason, self.reached_welcome))]

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise RuntimeError(f"session event in phase {self.phase}, expected {phase}")


_Handler = Callable[[SessionMachine, object], list[Action]]

# (phase, frame type) -> handler. A pair not listed is an unexpected frame: logged, ignored.
_TABLE: dict[tuple[Phase, type], _Handler] = {
    (Phase.AWAITING_WELCOME, Welcome): SessionMachine._on_welcome,  # type: ignore[dict-item]
    (Phase.AWAITING_WELCOME, ErrorFrame): SessionMachine._on_error_before_welcome,  # type: ignore[dict-item]
    (Phase.CONNECTED, Offer): SessionMachine._on_offer,  # type: ignore[dict-item]
    (Phase.CONNECTED, HeartbeatAck): SessionMachine._on_heartbeat_ack,  # type: ignore[dict-item]
    (Phase.CONNECTED, CompleteAck): SessionMachine._on_complete_ack,  # type: ignore[dict-item]
    (Phase.CONNECTED, FailAck): SessionMachine._on_fail_ack,  # type: ignore[dict-item]
    (Phase.CONNECTED, ErrorFrame): SessionMachine._on_error,  # type: ignore[dict-item]
}
