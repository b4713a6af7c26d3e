from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from scripted_studio import ScriptedStudio
from websockets.asyncio.server import serve


@pytest.fixture
async def studio() -> AsyncIterator[ScriptedStudio]:
    state = ScriptedStudio()
    async with serve(
        state.handler,
        "127.0.0.1",
        0,
        subprotocols=["studio-worker-v1"],  # type: ignore[list-item]
        process_request=state.process_request,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        state.url = f"http://127.0.0.1:{port}"
        yield state
