from __future__ import annotations

import pytest

from studio_worker.jobs.admission import Admit, Refuse, admit
from studio_worker.jobs.gate import JobGate
from studio_worker.protocol.frames import RejectCode


@pytest.mark.parametrize(
    ("paused", "only_idle", "presence", "busy", "expected"),
    [
        (False, False, None, False, None),
        (True, False, None, False, ("worker paused by operator", RejectCode.PAUSED)),
        (True, True, "active", True, ("worker paused by operator", RejectCode.PAUSED)),
        (
            False,
            True,
            None,
            False,
            ("only when idle: the person is using this computer", RejectCode.PAUSED),
        ),
        (
            False,
            True,
            "active",
            False,
            ("only when idle: the person is using this computer", RejectCode.PAUSED),
        ),
        (False, True, "idle", False, None),
        (False, True, "idle", True, ("worker already has an in-flight job", RejectCode.BUSY)),
        (False, False, None, True, ("worker already has an in-flight job", RejectCode.BUSY)),
    ],
)
def test_first_matching_rule_wins(
    paused: bool,
    only_idle: bool,
    presence: str | None,
    busy: bool,
    expected: tuple[str, RejectCode] | None,
) -> None:
    verdict = admit(paused=paused, only_when_idle=only_idle, presence=presence, busy=busy)
    if expected is None:
        assert verdict == Admit()
    else:
        assert isinstance(verdict, Refuse)
        assert (verdict.reason, verdict.code) == expected


def test_gate_is_compare_and_swap() -> None:
    gate = JobGate()
    assert gate.try_reserve("a") and gate.busy
    assert not gate.try_reserve("b")
    gate.release("b")  # not the holder: nothing happens
    assert gate.holder == "a"
    gate.release("a")
    assert not gate.busy and gate.try_reserve("b")
