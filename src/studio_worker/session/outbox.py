"""Frames for the studio that must survive a reconnect (`completeJson`, `fail`).

The dispatcher puts; the connected session pumps them out in order. A frame whose send
failed goes back to the front and leaves with the next session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from studio_worker.domain.wire import WireModel
from studio_worker.protocol.frames import encode


class Outbox:
    def __init__(self) -> None:
        self._frames: deque[WireModel] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: WireModel) -> None:
        self._frames.append(frame)
        self._ready.set()

    async def pump(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Send frames as they come, forever; a failed send re-queues and re-raises."""
        while True:
            while not self._frames:
                self._ready.clear()
                await self._ready.wait()
            frame = self._frames.popleft()
            try:
                await send(encode(frame))
            except BaseException:
                self._frames.appendleft(frame)
                raise
