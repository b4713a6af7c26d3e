"""How one session attempt ended (protocol §3.9), and the UI-facing session states (§4.6)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EndKind(StrEnum):
    STOPPED = "stopped"  # asked to stop: no reconnect
    AUTH_FAILED = "auth_failed"  # 401 upgrade, close 4001, error auth_failed: terminal
    FATAL = "fatal"  # any other `error` frame: terminal
    DISCONNECTED = "disconnected"  # socket closed, idle timeout, send failure: reconnect
    ERROR = "error"  # transport/internal error: reconnect


@dataclass(frozen=True, slots=True)
class SessionEnd:
    kind: EndKind
    reason: str = ""
    reached_welcome: bool = False

    @property
    def terminal(self) -> bool:
        return self.kind in (EndKind.STOPPED, EndKind.AUTH_FAILED, EndKind.FATAL)


class SessionState(StrEnum):
    """`GET /daemon/status` session states (protocol §4.6)."""

    WAITING_FOR_APPROVAL = "waiting_for_approval"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    AUTH_FAILED = "auth_failed"
    FATAL = "fatal"
    STOPPED = "stopped"


AUTH_FAILED_HINT = "Re-register with `studio-worker register --reset`."
