"""The log shipper: a busy second's lines leave as several bounded `logBatch` frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from studio_worker.session.attempt import LOG_BATCH_MAX, SessionAttempt, Timing
from studio_worker.status.shiplog import ShipQueue


class Socket:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        self.frames.append(json.loads(text))


def test_drain_takes_the_oldest_up_to_a_limit() -> None:
    queue = ShipQueue()
    for n in range(5):
        queue.push("info", "ws", f"m{n}")
    assert [e.message for e in queue.drain(2)] == ["m0", "m1"]
    assert [e.message for e in queue.drain(10)] == ["m2", "m3", "m4"]
    assert queue.drain(3) == [] and len(queue) == 0


async def test_a_big_backlog_ships_in_bounded_batches_in_order() -> None:
    ship, ws = ShipQueue(), Socket()
    total = 2 * LOG_BATCH_MAX + 7
    for n in range(total):
        ship.push("info", "ws", f"m{n}", f"j{n}")
    attempt: Any = SessionAttempt.__new__(SessionAttempt)
    attempt._ship, attempt._ws, attempt._timing = ship, ws, Timing(log_flush_s=60)
    task = asyncio.create_task(attempt._ship_logs())
    while sum(len(f["entries"]) for f in ws.frames) < total:
        await asyncio.sleep(0)
    task.cancel()
    assert [len(f["entries"]) for f in ws.frames] == [LOG_BATCH_MAX, LOG_BATCH_MAX, 7]
    messages = [e["message"] for f in ws.frames for e in f["entries"]]
    assert messages == [f"m{n}" for n in range(total)]
    assert {f["type"] for f in ws.frames} == {"logBatch"}
