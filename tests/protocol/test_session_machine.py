"""Table-driven tests of the pure session machine (protocol §3.2-§3.6)."""

from __future__ import annotations

import json

import pytest

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.protocol.outcomes import EndKind
from studio_worker.protocol.session import (
    Close,
    End,
    HandleOffer,
    HeartbeatAcked,
    Log,
    Phase,
    RefuseUnreadableOffer,
    SendHello,
    SessionMachine,
    StartPumps,
)

CAPS = WorkerCapabilities(
    machine_name="m",
    username="u",
    agent_version="0",
    engine="multi",
    vram_total_gb=0,
    vram_threshold_gb=12,
    auto_enabled=True,
)
WELCOME = '{"type":"welcome","workerId":"w1","serverTime":"2026-01-01T00:00:00Z"}'
OFFER = json.dumps(
    {
        "type": "offer",
        "claim": {
            "jobId": "j1",
            "gameId": "g",
            "assetName": "a",
            "model": "m",
            "vramGbEstimate": 1,
            "task": {"kind": "llm", "messages": [{"role": "user", "content": "hi"}]},
            "modelSource": {"engine": "synthetic"},
        },
    }
)


def connected() -> SessionMachine:
    machine = SessionMachine("tok", CAPS)
    machine.opened()
    machine.text_received(WELCOME)
    return machine


def kinds(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]


def end_of(actions: list[object]) -> End:
    ends = [a for a in actions if isinstance(a, End)]
    assert len(ends) == 1
    return ends[0]


def test_opened_sends_hello_with_token_and_capabilities() -> None:
    machine = SessionMachine("tok", CAPS)
    (hello,) = machine.opened()
    assert isinstance(hello, SendHello)
    assert hello.frame.auth_token == "tok" and hello.frame.capabilities == CAPS
    assert machine.phase is Phase.AWAITING_WELCOME


def test_welcome_starts_pumps_and_logs() -> None:
    machine = SessionMachine("tok", CAPS)
    machine.opened()
    actions = machine.text_received(WELCOME)
    assert kinds(actions) == [Log, StartPumps]
    assert "server welcomed w1 server_time=2026-01-01T00:00:00Z" in actions[0].message  # type: ignore[attr-defined]
    assert machine.phase is Phase.CONNECTED and machine.reached_welcome


@pytest.mark.parametrize(
    ("frame", "close_reason", "end_kind"),
    [
        (
            '{"type":"error","code":"auth_failed","message":"bad token"}',
            "auth failed",
            EndKind.AUTH_FAILED,
        ),
        (
            '{"type":"error","code":"protocol_violation","message":"x"}',
            "protocol violation",
            EndKind.FATAL,
        ),
        (
            '{"type":"error","code":"internal_error","message":"x"}',
            "protocol violation",
            EndKind.FATAL,
        ),
    ],
)
def test_errors_before_welcome(frame: str, close_reason: str, end_kind: EndKind) -> None:
    machine = SessionMachine("tok", CAPS)
    machine.opened()
    actions = machine.text_received(frame)
    close = next(a for a in actions if isinstance(a, Close))
    assert (close.code, close.reason) == (1000, close_reason)
    end = end_of(actions).end
    assert end.kind is end_kind and not end.reached_welcome and end.terminal


@pytest.mark.parametrize(
    "frame", [OFFER, '{"type":"heartbeatAck"}', '{"type":"completeAck","jobId":"j"}']
)
def test_frames_before_welcome_are_logged_and_ignored(frame: str) -> None:
    machine = SessionMachine("tok", CAPS)
    machine.opened()
    actions = machine.text_received(frame)
    assert kinds(actions) == [Log]
    assert "unexpected frame before welcome" in actions[0].message  # type: ignore[attr-defined]
    assert machine.phase is Phase.AWAITING_WELCOME


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (OFFER, [HandleOffer]),
        ('{"type":"heartbeatAck"}', [HeartbeatAcked]),
        ('{"type":"completeAck","jobId":"j"}', [Log]),
        ('{"type":"failAck","jobId":"j"}', [Log]),
        ("garbage", [Log]),
        ('{"type":"brandNew","x":1}', [Log]),
        (
            '{"type":"offer","claim":{"jobId":"j9","task":{"kind":"nope"}}}',
            [Log, RefuseUnreadableOffer],
        ),
        (WELCOME, [Log]),
    ],
)
def test_connected_frames(frame: str, expected: list[type]) -> None:
    machine = connected()
    assert kinds(machine.text_received(frame)) == expected
    assert machine.phase is Phase.CONNECTED  # nothing here ends the session


@pytest.mark.parametrize(
    ("code", "reason", "end_kind"),
    [
        (4001, "revoked", EndKind.AUTH_FAILED),
        (4002, "violation", EndKind.DISCONNECTED),
        (1000, "", EndKind.DISCONNECTED),
        (1006, "", EndKind.DISCONNECTED),
        (None, "", EndKind.DISCONNECTED),
    ],
)
def test_closes(code: int | None, reason: str, end_kind: EndKind) -> None:
    machine = connected()
    end = end_of(machine.closed(code, reason)).end
    assert end.kind is end_kind and end.reached_welcome
    if code == 4001:
        assert end.reason == "server closed 4001: revoked"


def test_error_after_welcome_is_terminal() -> None:
    machine = connected()
    actions = machine.text_received('{"type":"error","code":"worker_deleted","message":"gone"}')
    assert end_of(actions).end.kind is EndKind.FATAL
    assert any(
        isinstance(a, Log) and "server error worker_deleted: gone" in a.message for a in actions
    )


def test_idle_timeout_stop_and_send_failure() -> None:
    assert end_of(connected().idle_timeout(20)).end.kind is EndKind.DISCONNECTED
    stopped = connected().stop()
    assert Close(1000, "session ended") in stopped
    assert end_of(stopped).end.kind is EndKind.STOPPED
    assert end_of(connected().send_failed("heartbeat", "boom")).end.kind is EndKind.ERROR


def test_nothing_happens_after_the_end() -> None:
    machine = connected()
    machine.stop()
    assert machine.text_received(OFFER) == []
    assert machine.closed(1000, "") == []
    assert machine.stop() == []
