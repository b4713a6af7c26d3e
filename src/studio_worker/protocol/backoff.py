"""Reconnect policy (protocol §3.9): exponential backoff, reset after `welcome`, optional cap."""

from __future__ import annotations

from dataclasses import dataclass

from studio_worker.protocol.outcomes import SessionEnd

BASE_BACKOFF_MS = 1000
MAX_BACKOFF_MS = 30000


def backoff_ms(attempt: int) -> int:
    """`min(1000 ms * 2^(attempt-1), 30000 ms)`; attempt counts from 1."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    exponent: int = min(attempt - 1, 16)
    return min(BASE_BACKOFF_MS * (1 << exponent), MAX_BACKOFF_MS)


@dataclass(frozen=True, slots=True)
class Retry:
    attempt: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    attempts: int


@dataclass(frozen=True, slots=True)
class Terminal:
    end: SessionEnd


Decision = Retry | GiveUp | Terminal


class ReconnectPolicy:
    """Decides what follows a session attempt. `cap` 0 means retry forever (the default)."""

    def __init__(self, cap: int = 0) -> None:
        if cap < 0:
            raise ValueError("ws_reconnect_attempts must be >= 0")
        self.cap = cap
        self.attempt = 0

    def after(self, end: SessionEnd) -> Decision:
        if end.terminal:
            return Terminal(end)
        if end.reached_welcome:
            self.attempt = 0
        self.attempt += 1
        if self.cap > 0 and self.attempt > self.cap:
            return GiveUp(self.cap)
        return Retry(self.attempt, backoff_ms(self.attempt))
