"""A self-hosted studio and an approved worker in this process, for real-engine jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.studio.records import JobRecord
from studio_worker.studio.server import StudioServer


@contextlib.asynccontextmanager
async def studio_and_worker(
    tmp_path: Path, stock: Callable[[Path], None]
) -> AsyncIterator[tuple[StudioServer, Daemon, Path]]:
    """`stock(shelf)` puts the model files on the studio's shelf; yields once approved."""
    studio = StudioServer(tmp_path / "studio")
    stock(studio.shelf.root)
    base_url = await studio.start()
    config = tmp_path / "worker" / "config.toml"
    models_root = tmp_path / "models"
    ConfigStore(config).save(
        Settings(api_base_url=base_url, models_root=models_root, auto_update_enabled=False)
    )
    daemon = Daemon(config, tuning=DaemonTuning(registration_tick_s=0.2))
    worker = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(30):
            while not studio.pending_requests():
                await asyncio.sleep(0.05)
        studio.approve(studio.pending_requests()[0].id)
        yield studio, daemon, models_root
    finally:
        daemon.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 20)
        await studio.stop()


def stored(job: JobRecord) -> bytes:
    """The bytes of a completed job's uploaded result, as the studio stored them."""
    assert job.status == "done", job.error
    assert job.result_path is not None
    data = Path(job.result_path).read_bytes()
    assert job.size == len(data) > 0
    return data
