"""The in-process fault rig: a real studio, the fault proxy in front of it, a real daemon.

The daemon talks to the studio only through the proxy. Its clocks are shortened
(`TIMING`) so a fault is detected in seconds; the rule each clock drives is unchanged
(the defaults are pinned by `test_the_contract_clocks_are_the_defaults`). Its one real
engine is `GatedEngine`, answering `llama-cpp` jobs when the test says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import FaultProxy

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobError, JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.base import Engine, Progress
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.synthetic import SyntheticEngine
from studio_worker.session.attempt import Timing
from studio_worker.studio.records import JobRecord, JobStatus
from studio_worker.studio.server import StudioServer

TIMING = Timing(heartbeat_s=0.5, log_flush_s=0.2, read_idle_s=2.0, shutdown_grace_s=1.0)
# Upload retries pause 0.1 s × attempt here (1 s × attempt in the contract).
TUNING = DaemonTuning(
    timing=TIMING, registration_tick_s=0.1, backoff_scale=0.05, upload_pause_s=0.1
)
GATED_TASK = {"kind": "llm", "messages": [{"role": "user", "content": "hold"}]}
GATED_SOURCE = {"engine": "llama-cpp", "files": []}
LIMIT_S = 20.0


class GatedEngine:
    """Runs until `release` is set (or cancel): the job is in flight while the test acts."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.runs = 0

    @property
    def name(self) -> str:
        return "llama"

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {TaskKind.LLM: ["gated:*"]}

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        self.runs += 1
        self.started.set()
        while not self.release.wait(0.01):
            if cancel.is_set():
                raise JobError("cancelled", retryable=True)
        return JsonResult({"object": "chat.completion", "run": self.runs})


@dataclass
class Rig:
    studio: StudioServer
    proxy: FaultProxy
    daemon: Daemon
    engine: GatedEngine
    task: asyncio.Task[int]
    worker_id: str

    def submit_gated(self) -> str:
        return self.studio.submit_job("llm", GATED_TASK, "gated", model_source=GATED_SOURCE)

    async def running(self, job_id: str) -> None:
        """Wait until the job is accepted and inside the engine."""
        await self.studio.jobs.wait_for(job_id, LIMIT_S, statuses=(JobStatus.RUNNING,))
        async with asyncio.timeout(LIMIT_S):
            while not self.engine.started.is_set():
                await asyncio.sleep(0.01)

    async def outcome(self, job_id: str) -> JobRecord:
        return await self.studio.wait_for_job(job_id, LIMIT_S)

    def deliveries(self, job_id: str) -> int:
        return self.studio.jobs.deliveries.get(job_id, 0)

    async def sessions(self, count: int) -> None:
        """Wait until the studio has welcomed the worker on its `count`-th socket."""
        async with asyncio.timeout(LIMIT_S):
            while self.proxy.websockets < 1 or not self._welcomed() or self._opened() < count:
                await asyncio.sleep(0.02)

    def _welcomed(self) -> bool:
        session = self.studio.hub.session(self.worker_id)
        return session is not None and session.welcomed

    def _opened(self) -> int:
        return sum(1 for r in self.proxy.requests if b"/connect" in r)


@contextlib.asynccontextmanager
async def fault_rig(
    tmp_path: Path,
    *,
    models_root: Path | None = None,
    llama: Engine | None = None,
    **studio_kw: Any,
) -> AsyncIterator[Rig]:
    """`llama` replaces the gated engine for `llama-cpp` jobs when given."""
    studio = StudioServer(tmp_path / "studio", **studio_kw)
    await studio.start()
    assert studio.url is not None
    proxy = FaultProxy("127.0.0.1", int(studio.url.rsplit(":", 1)[1]))
    await proxy.start()
    config = tmp_path / "worker" / "config.toml"
    ConfigStore(config).save(
        Settings(
            api_base_url=proxy.url,
            models_root=models_root or tmp_path / "models",
            auto_update_enabled=False,
        )
    )
    engine = GatedEngine()
    daemon = Daemon(
        config,
        tuning=TUNING,
        engines=EngineRegistry([llama or engine, SyntheticEngine()]),
    )
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(LIMIT_S):
            while not studio.pending_requests():
                await asyncio.sleep(0.02)
        worker_id = studio.approve(studio.pending_requests()[0].id)
        rig = Rig(studio, proxy, daemon, engine, task, worker_id)
        await rig.sessions(1)
        yield rig
    finally:
        engine.release.set()
        daemon.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        await proxy.close()
        await studio.stop()
