"""Model pulls through the local API: fetch a model source into the cache, with progress.

    POST /models/pull   {"model": "<name>", "source": <ModelSource, wire camelCase>}
                        -> 202 {"ok": true, "id": "<engine>/<model>"}; the download runs on
                        the daemon, byte progress shows in `/daemon/status` `downloads`
    GET  /models/pulls  -> {"pulls": [...newest first], "downloads": [...]}

A pull uses the daemon's own model store, so the same files a studio job would fetch land
in the same place, partials resume, and the URL and filename guards apply before any
request. One pull per model at a time (`409 model_busy`); pulls still running when the
local API closes are cancelled (their partial files stay and resume later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from studio_worker.domain.logs import rfc3339_millis
from studio_worker.domain.tasks import ModelSource
from studio_worker.localapi.http import ApiError, read_json
from studio_worker.models import ModelError, check_filename, check_url, sanitise_id

if TYPE_CHECKING:
    from studio_worker.localapi.server import LocalApiDeps

log = logging.getLogger(__name__)

PULLS_CAP = 20


@dataclass
class Pull:
    engine: str
    model: str
    files: list[str]
    started_at: str
    state: str = "running"  # running | done | failed
    error: str | None = None
    finished_at: str | None = None

    @property
    def id(self) -> str:
        return f"{self.engine}/{self.model}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "engine": self.engine,
            "model": self.model,
            "files": self.files,
            "state": self.state,
            "error": self.error,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }


def _now() -> str:
    return rfc3339_millis(datetime.now(UTC))


def parse_pull(body: dict[str, Any]) -> tuple[str, ModelSource]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "bad_request", "model: must be a model name")
    try:
        source = ModelSource.model_validate(body.get("source"))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(400, "bad_request", f"source: {problems}") from None
    if not source.files:
        raise ApiError(400, "bad_request", "source: lists no files")
    try:
        for file in source.files:
            check_filename(file.filename)
            check_url(file.url)
    except ModelError as exc:
        raise ApiError(400, "bad_request", exc.message) from None
    return model.strip(), source


class ModelsRoutes:
    def __init__(self, deps: LocalApiDeps) -> None:
        self.deps = deps
        self._pulls: deque[Pull] = deque(maxlen=PULLS_CAP)
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/models/pull", self.pull)
        app.router.add_get("/models/pulls", self.pulls)
        app.on_cleanup.append(self._cancel_all)

    async def _cancel_all(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def running(self, engine: str, model: str) -> bool:
        key = (sanitise_id(engine), sanitise_id(model))
        return any(
            p.state == "running" and (sanitise_id(p.engine), sanitise_id(p.model)) == key
            for p in self._pulls
        )

    async def pull(self, request: web.Request) -> web.Response:
        model, source = parse_pull(await read_json(request))
        if self.running(source.engine, model):
            raise ApiError(409, "model_busy", f"model {source.engine}/{model} is being pulled")
        record = Pull(source.engine, model, [f.filename for f in source.files], _now())
        self._pulls.appendleft(record)
        task = asyncio.get_running_loop().create_task(
            self._run(record, source), name=f"pull-{record.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("model pull started from the local API: %s", record.id, extra={"op": "pull"})
        return web.json_response({"ok": True, "id": record.id}, status=202)

    async def _run(self, record: Pull, source: ModelSource) -> None:
        try:
            await self.deps.models.ensure(record.model, source)
        except ModelError as exc:
            record.state, record.error = "failed", exc.message
            log.warning("model pull %s failed: %s", record.id, exc.message, extra={"op": "pull"})
        except asyncio.CancelledError:
            record.state, record.error = "failed", "cancelled: the daemon stopped"
            raise
        except Exception as exc:  # a pull must never take the daemon down
            record.state, record.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("model pull %s crashed", record.id, extra={"op": "pull"})
        else:
            record.state = "done"
            log.info("model pull %s done", record.id, extra={"op": "pull"})
        finally:
            record.finished_at = _now()

    async def pulls(self, request: web.Request) -> web.Response:
        downloads = self.deps.status.snapshot().to_json()["downloads"]
        return web.json_response(
            {"pulls": [p.to_json() for p in self._pulls], "downloads": downloads}
        )
