"""`Dispatcher.begin`: how an accepted job starts, and when its breadcrumbs are written.

An inline job runs on the caller's task (no task of its own, no trip round the event
loop) and its breadcrumbs wait until its result is in the outbox, the offer's first, so
the lines keep their order. Any other job gets its task and the offer's line at once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from synthetic_offers import claim, running_dispatcher

from studio_worker.domain.wire import WireModel
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.protocol.frames import Accept
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue


class Events:
    """One ordered record of frames put in the outbox and breadcrumbs written."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def put(self, frame: WireModel) -> None:
        self.seen.append(f"frame {getattr(frame, 'type', '?')}")


class RecordingCrumbs(Breadcrumbs):
    def __init__(self, events: Events) -> None:
        super().__init__(ShipQueue())
        self.events = events

    def __call__(self, level: str, category: str, message: str, job_id: str | None = None) -> None:
        self.events.seen.append(f"crumb {message}")
        super().__call__(level, category, message, job_id)  # type: ignore[arg-type]


@pytest.fixture
async def parts() -> AsyncIterator[tuple[Dispatcher, Events]]:
    events = Events()
    async with running_dispatcher(events, crumbs=RecordingCrumbs(events)) as dispatcher:
        yield dispatcher, events


async def test_an_inline_job_runs_on_the_callers_task_and_writes_its_lines_after(
    parts: tuple[Dispatcher, Events],
) -> None:
    dispatcher, events = parts
    offer = claim("j-llm", {"kind": "llm", "messages": [{"role": "user", "content": "hi"}]})
    reply, note = dispatcher.answer(offer)
    assert reply == Accept(job_id="j-llm")
    caller = asyncio.current_task()
    tasks_before = asyncio.all_tasks()
    await dispatcher.begin(offer, note)
    assert asyncio.current_task() is caller
    assert asyncio.all_tasks() <= tasks_before  # no task was made for the job
    # done when `begin` returns: the result is in the outbox, then the lines, in order
    seen = [re.sub(r"in \d+ms", "in Nms", line) for line in events.seen]
    assert seen == [
        "frame completeJson",
        "crumb offer received j-llm game=g asset=a model=synthetic vram=0",
        "crumb llm dispatched in Nms",
        "crumb json result sent",
    ]
    await asyncio.wait_for(dispatcher.wait_idle(), 1)
    # the next job's lines are not held back
    dispatcher._say("info", "ws", "later line", "j-other")
    assert events.seen[-1] == "crumb later line"


async def test_a_job_run_in_a_thread_gets_its_task_and_the_offer_line_at_once(
    parts: tuple[Dispatcher, Events],
) -> None:
    dispatcher, events = parts
    offer = claim("j-img", {"kind": "image", "prompt": "a lantern", "width": 16, "height": 16})
    reply, note = dispatcher.answer(offer)
    assert reply == Accept(job_id="j-img")
    await dispatcher.begin(offer, note)
    offer_line = "crumb offer received j-img game=g asset=a model=synthetic vram=0"
    assert events.seen == [offer_line]  # before the job has done anything
    async with asyncio.timeout(10):
        while not any(s.startswith("frame") for s in events.seen):
            await asyncio.sleep(0.01)
    # an image is uploaded; with no studio link the job fails (retryable) after its lines
    assert events.seen[0] == offer_line
    assert events.seen[-1] == "frame fail"
