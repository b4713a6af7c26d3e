from __future__ import annotations

from datetime import UTC, datetime

from studio_worker.status.shiplog import ShipQueue


def clock() -> datetime:
    return datetime(2026, 10, 7, 9, 14, 3, 512000, tzinfo=UTC)


def test_entries_have_the_wire_timestamp_and_optional_job_id() -> None:
    queue = ShipQueue(clock=clock)
    queue.push("info", "ws", "hello", "j1")
    queue.push("warn", "ws", "no job")
    a, b = queue.drain()
    assert a.to_wire() == {
        "ts": "2026-10-07T09:14:03.512Z",
        "level": "info",
        "category": "ws",
        "message": "hello",
        "jobId": "j1",
    }
    assert "jobId" not in b.to_wire()
    assert len(queue) == 0


def test_overflow_drops_oldest_and_adds_a_marker() -> None:
    queue = ShipQueue(cap=5, clock=clock)
    for n in range(5):
        queue.push("info", "ws", f"m{n}")
    queue.push("info", "ws", "m5")
    items = queue.drain()
    assert len(items) <= 5
    messages = [e.message for e in items]
    assert "ship queue full (5 entries); dropped 2 oldest" in messages
    assert messages[-1] == "m5" and "m0" not in messages and "m1" not in messages


def test_failed_batch_goes_back_in_front() -> None:
    queue = ShipQueue(cap=10, clock=clock)
    queue.push("info", "ws", "old")
    batch = queue.drain()
    queue.push("info", "ws", "new")
    queue.requeue_front(batch)
    assert [e.message for e in queue.drain()] == ["old", "new"]


def test_requeue_respects_the_cap() -> None:
    queue = ShipQueue(cap=4, clock=clock)
    for n in range(3):
        queue.push("info", "ws", f"a{n}")
    batch = queue.drain()
    for n in range(3):
        queue.push("info", "ws", f"b{n}")
    queue.requeue_front(batch)
    items = queue.drain()
    assert len(items) <= 4
    assert items[-1].message.startswith("ship queue full")
    assert "b2" in [e.message for e in items]
