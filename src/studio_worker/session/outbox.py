"""Frames for the studio that must survive a reconnect (`completeJson`, `fail`).

The dispatcher puts; the connected session pumps them out in order. A frame whose send
failed goes back to the front and leaves with the next session — but only while the
studio can still hold the job: after a silence longer than `hold_s` the studio has taken
its jobs back (protocol §3.6), and a late `fail`/`completeJson` for a job it no longer
holds is a protocol violation (§3.5, 4002) that ends the worker. Such frames are dropped
at the next `welcome` (the studio has requeued their jobs; nothing is lost).

An optional ledger (the job journal) hears of every frame just before it is handed to
the socket, and of every frame that could not be, so it can keep crash-safe copies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from studio_worker.domain.wire import WireModel
from studio_worker.jobs.journal import REPLAY_WINDOW_S
from studio_worker.protocol.frames import CompleteJson, Fail, encode

log = logging.getLogger(__name__)

# The studio's hold on a silent worker's job is 30 s (§3.6); a frame older than this
# since the last word from the studio is not sent.
HOLD_S = REPLAY_WINDOW_S


class Ledger(Protocol):
    def sending(self, frame: WireModel) -> None: ...
    def unsent(self, frame: WireModel) -> None: ...
    def alive(self) -> None: ...
    def recover(self) -> list[WireModel]: ...


class Outbox:
    def __init__(
        self,
        ledger: Ledger | None = None,
        *,
        hold_s: float = HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._frames: deque[WireModel] = deque()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._ledger = ledger
        self._hold_s = hold_s
        self._clock = clock
        self._last_contact: float | None = None

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: WireModel) -> None:
        self._frames.append(frame)
        self._empty.clear()
        self._ready.set()

    def put_first(self, frames: Iterable[WireModel]) -> None:
        """Frames owed from before (the journal's replay) go ahead of everything."""
        for frame in reversed(list(frames)):
            self._frames.appendleft(frame)
        if self._frames:
            self._empty.clear()
            self._ready.set()

    def contact(self) -> None:
        """A frame arrived from the studio: it still holds this worker's jobs."""
        self._last_contact = self._clock()
        if self._ledger is not None:
            self._ledger.alive()

    def welcomed(self) -> list[CompleteJson | Fail]:
        """A new session: drop job frames the studio can no longer take (returned), then
        put first what the ledger still owes from a past run of the worker."""
        dropped = self._drop_stale()
        if self._ledger is not None:
            self.put_first(self._ledger.recover())
        return dropped

    def _drop_stale(self) -> list[CompleteJson | Fail]:
        now = self._clock()
        silent = None if self._last_contact is None else now - self._last_contact
        self._last_contact = now
        if silent is None or silent <= self._hold_s:
            return []
        stale = [f for f in self._frames if isinstance(f, CompleteJson | Fail)]
        for frame in stale:
            self._frames.remove(frame)
            if self._ledger is not None:
                self._ledger.sending(frame)  # gone for good: the journal forgets it too
            log.warning(
                "dropping %s for job %s: the studio was out of reach for %.0fs and has "
                "taken the job back",
                frame.type,
                frame.job_id,
                silent,
                extra={"job_id": frame.job_id, "op": "outbox"},
            )
        if not self._frames:
            self._empty.set()
        return stale

    async def wait_empty(self) -> None:
        await self._empty.wait()

    async def pump(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Send frames as they come, forever; a failed send re-queues and re-raises."""
        while True:
            while not self._frames:
                self._ready.clear()
                await self._ready.wait()
            frame = self._frames.popleft()
            if self._ledger is not None:
                self._ledger.sending(frame)
            try:
                await send(encode(frame))
            except BaseException:
                self._frames.appendleft(frame)
                if self._ledger is not None:
                    self._ledger.unsent(frame)
                raise
            if not self._frames:
                self._empty.set()
