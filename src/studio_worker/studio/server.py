"""`StudioServer`: the self-hosted studio on one port (worker API, WebSocket, admin API).

Composition root of the studio package: builds the store, job book, hub and routes, and
runs the offer dispatcher and the stale sweep in one task group while started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from studio_worker.domain.logs import LogEntry
from studio_worker.protocol.urls import API_PREFIX
from studio_worker.studio.admin import AdminRoutes
from studio_worker.studio.core import StudioCore
from studio_worker.studio.hub import Hub
from studio_worker.studio.jobbook import JobBook
from studio_worker.studio.records import JobRecord, RegisterRequestRecord, same_secret
from studio_worker.studio.shelf import Shelf, ShelfFile
from studio_worker.studio.store import Store
from studio_worker.studio.worker_http import RateLimiter, WorkerRoutes
from studio_worker.studio.ws import WorkerSocket, bearer

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin-token"
DB_FILE = "studio.sqlite3"


def load_admin_token(data_dir: Path, explicit: str | None = None) -> str:
    """The explicit token, else `<data dir>/admin-token`, created (0600) on first start."""
    if explicit:
        return explicit
    path = data_dir / ADMIN_TOKEN_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    token = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


class StudioServer:
    def __init__(
        self,
        data_dir: Path | str,
        *,
        admin_token: str | None = None,
        max_attempts: int = 3,
        register_limit: int = 10,
        register_window_s: float = 60.0,
        sweep_every_s: float = 10.0,
        stale_after_s: float = 30.0,
        log_cap: int = 10_000,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.results_dir = self.data_dir / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = load_admin_token(self.data_dir, admin_token)
        self.shelf = Shelf(self.data_dir / "files")
        self._sweep_every = sweep_every_s
        self.store = Store(self.data_dir / DB_FILE, log_cap=log_cap)
        self.jobs = JobBook(self.store, max_attempts=max_attempts)
        self.hub = Hub(self.store, self.jobs, stale_after=stale_after_s)
        self.core = StudioCore(self.store, self.jobs, self.hub)
        self._limiter = RateLimiter(register_limit, register_window_s)
        self._runner: web.AppRunner | None = None
        self._loops: asyncio.Task[None] | None = None
        self.url: str | None = None

    # ---- lifecycle ----------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024 * 1024)
        worker = WorkerRoutes(self.store, self.jobs, self.hub, self.results_dir, self._limiter)
        sock = WorkerSocket(self.store, self.hub)
        p = API_PREFIX
        app.add_routes(
            [
                web.post(f"{p}/workers/register-request", worker.register_request),
                web.get(f"{p}/workers/register-requests/{{requestId}}", worker.poll),
                web.get(f"{p}/workers/{{workerId}}/connect", sock.handle),
                web.post(f"{p}/workers/{{workerId}}/jobs/{{jobId}}/complete", worker.complete),
                web.get("/healthz", self._healthz),
                web.get("/files/{name}", self.shelf.serve),
                web.get("/admin/files", self._list_files),
                *AdminRoutes(self.core, self.admin_token).routes(),
            ]
        )
        return app

    async def _list_files(self, request: web.Request) -> web.Response:
        if not same_secret(bearer(request) or "", self.admin_token):
            return web.json_response({"error": "admin token required"}, status=401)
        base = f"{request.scheme}://{request.host}"
        files = await asyncio.to_thread(self.shelf.listing)
        return web.json_response({"files": [f.model_file(base) for f in files]})

    def shelf_file(self, name: str, role: str = "model") -> dict[str, Any]:
        """A `ModelFile` (wire shape) for a file on the shelf; the studio must be started."""
        assert self.url is not None, "start the studio first"
        entry: ShelfFile = self.shelf.describe(name)
        return entry.model_file(self.url, role)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 = any free port); returns the base URL."""
        requeued = self.store.requeue_interrupted()
        if requeued:
            log.info("requeued %d job(s) interrupted by the last stop", len(requeued))
        for job in self.store.resume_interrupted():
            assert job.worker_id is not None
            log.info("job %s stays with %s, which ran it before the stop", job.id, job.worker_id)
            self.hub.expect_back(job.worker_id)
        self._runner = web.AppRunner(self.build_app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        self._loops = asyncio.create_task(self._run_loops(), name="studio-loops")
        log.info("studio listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._loops is not None:
            self._loops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loops
            self._loops = None
        if self._runner is not None:
            await self.hub.close_all()
            await self._runner.cleanup()
            self._runner = None
        self.store.close()

    async def __aenter__(self) -> StudioServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run_loops(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.hub.run_dispatcher())
            tg.create_task(self._sweeper())
            self.hub.wake()

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            try:
                await self.hub.sweep()
            except Exception:
                log.exception("stale sweep failed")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # ---- in-process API -----------------------------------------------------------

    def pending_requests(self) -> list[RegisterRequestRecord]:
        return self.core.pending_requests()

    def approve(self, request_id: str) -> str:
        return self.core.approve(request_id)

    def reject(self, request_id: str, reason: str = "") -> None:
        self.core.reject(request_id, reason)

    def workers(self) -> list[dict[str, Any]]:
        return self.core.workers()

    async def revoke(self, worker_id: str) -> None:
        await self.core.revoke(worker_id)

    async def delete_worker(self, worker_id: str) -> None:
        await self.core.delete_worker(worker_id)

    def submit_job(
        self,
        kind: str,
        task: dict[str, Any],
        model: str = "synthetic",
        *,
        model_source: dict[str, Any] | None = None,
        vram_gb_estimate: float = 0.0,
        game_id: str = "local",
        asset_name: str = "",
    ) -> str:
        return self.core.submit_job(
            kind,
            task,
            model,
            model_source=model_source,
            vram_gb_estimate=vram_gb_estimate,
            game_id=game_id,
            asset_name=asset_name,
        )

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.core.get_job(job_id)

    def list_jobs(self, status: str | None = None) -> list[JobRecord]:
        return self.core.list_jobs(status)

    async def wait_for_job(self, job_id: str, timeout: float = 30.0) -> JobRecord:  # noqa: ASYNC109
        """Wait until the job is done or failed (signalled); TimeoutError past `timeout`."""
        return await self.jobs.wait_for(job_id, timeout)

    def worker_logs(self, worker_id: str, limit: int = 1000) -> list[LogEntry]:
        return self.core.worker_logs(worker_id, limit)
