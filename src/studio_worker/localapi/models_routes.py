"""The model cache and residency through the local API: list, pull with progress, load,
unload.

    GET  /models          -> {"root", "models": [... each with `resident`], "engines": [...]}
    GET  /models/resident -> {"engines": [{name, wireNames, hosted, running, pid, busy,
                              resident: [{path, file, model}]}]}
    POST /models/load     {"engine": "<engine>", "model": "<model>"} (a cached model) ->
                          {"ok", "id", "engine", "pid", "resident"}; 404 unknown_model,
                          409 busy, 400 not_loadable / load_failed, 500 load_failed
    POST /models/unload   {"engine": "<name>"} -> {"ok", "engine", "stopped", "pid"};
                          stops that engine's process (all of its memory is freed; the next
                          job starts it again); 404 unknown_engine, 409 busy
    POST /models/pull     {"model": "<name>", "source": <ModelSource, wire camelCase>}
                          -> 202 {"ok": true, "id": "<engine>/<model>"}; the download runs on
                          the daemon, byte progress shows in `/daemon/status` `downloads`
    GET  /models/pulls    -> {"pulls": [...newest first], "downloads": [...]}

Load and unload hold the one-job gate while they work (holder `load <id>` / `unload
<engine>`), so they never overlap a studio or local job: a held gate answers `409 busy`.
A load goes through the engine's own load path in its engine process (`Preload`), so the
next job on that model finds it loaded.

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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from studio_worker.domain.logs import rfc3339_millis
from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import ModelSource
from studio_worker.engines.base import Engine
from studio_worker.engines.host import HostedEngine
from studio_worker.localapi.http import ApiError, read_json
from studio_worker.localapi.model_files import model_source
from studio_worker.models import ModelError, check_filename, check_url, sanitise_id
from studio_worker.models.store import CachedModel

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


def _holds(model: CachedModel, path: str) -> bool:
    file = Path(path)
    return file == model.path or model.path in file.parents


def resident_entries(engine: Engine, cached: Sequence[CachedModel]) -> list[dict[str, Any]]:
    """`engine`'s resident files, each with the cached model (`<engine>/<model>`) it is of."""
    out = []
    for path in engine.resident():
        owner = next((m for m in cached if _holds(m, path)), None)
        model = f"{owner.engine}/{owner.model}" if owner else None
        out.append({"path": path, "file": Path(path).name, "model": model})
    return out


def engine_json(engine: Engine, cached: Sequence[CachedModel], wire: list[str]) -> dict[str, Any]:
    host = engine.host if isinstance(engine, HostedEngine) else None
    return {
        "name": engine.name,
        "wireNames": wire,
        "hosted": host is not None,  # runs in an engine process of its own (loads models)
        "running": bool(host and host.running),
        "pid": host.pid if host else None,
        "busy": bool(host and host.busy),
        "resident": resident_entries(engine, cached),
    }


def _cached_id(body: dict[str, Any]) -> tuple[str, str]:
    """(engine, model) of a load body: `{"engine", "model"}` or `{"model": "<e>/<m>"}`."""
    engine, model = body.get("engine"), body.get("model")
    if engine is None and isinstance(model, str) and "/" in model:
        engine, _, model = model.partition("/")
    if not isinstance(engine, str) or not engine.strip():
        raise ApiError(400, "bad_request", "engine: must name the model's engine, e.g. llama-cpp")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "bad_request", "model: must name a cached model")
    return engine.strip(), model.strip()


class ModelsRoutes:
    def __init__(self, deps: LocalApiDeps) -> None:
        self.deps = deps
        self._pulls: deque[Pull] = deque(maxlen=PULLS_CAP)
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/models", self.list_models)
        app.router.add_get("/models/resident", self.resident)
        app.router.add_post("/models/load", self.load)
        app.router.add_post("/models/unload", self.unload)
        app.router.add_post("/models/pull", self.pull)
        app.router.add_get("/models/pulls", self.pulls)
        app.on_cleanup.append(self._cancel_all)

    # ---- the cache and residency ------------------------------------------------------

    async def _cached(self) -> list[CachedModel]:
        return await asyncio.to_thread(self.deps.models.cached)

    def _engines_json(self, cached: Sequence[CachedModel]) -> list[dict[str, Any]]:
        registry = self.deps.engines
        return [
            engine_json(engine, cached, registry.wire_names(engine.name))
            for engine in registry.engines
        ]

    async def list_models(self, request: web.Request) -> web.Response:
        cached = await self._cached()
        engines = self._engines_json(cached)
        holding = {
            entry["model"]: engine["name"]
            for engine in engines
            for entry in engine["resident"]
            if entry["model"]
        }
        models = []
        for m in cached:
            model_id = f"{m.engine}/{m.model}"
            models.append(
                {
                    "id": model_id,
                    "engine": m.engine,
                    "model": m.model,
                    "path": str(m.path),
                    "sizeBytes": m.size,
                    "files": [{"name": f.name, "sizeBytes": f.size} for f in m.files],
                    "partialFiles": [{"name": f.name, "sizeBytes": f.size} for f in m.partials],
                    "resident": model_id in holding,
                    "residentIn": holding.get(model_id),
                    "loadable": self._loadable(m),
                }
            )
        root = str(self.deps.models.root)
        return web.json_response({"root": root, "models": models, "engines": engines})

    def _loadable(self, model: CachedModel) -> bool:
        engine = self.deps.engines.named(model.engine)
        return isinstance(engine, HostedEngine) and bool(model.files)

    async def resident(self, request: web.Request) -> web.Response:
        return web.json_response({"engines": self._engines_json(await self._cached())})

    @contextlib.asynccontextmanager
    async def _gate(self, holder: str) -> AsyncIterator[None]:
        gate = self.deps.gate
        if not gate.try_reserve(holder):
            raise ApiError(
                409, "busy", f"the worker is busy ({gate.holder}); try again when it is done"
            )
        try:
            yield
        finally:
            gate.release(holder)

    async def load(self, request: web.Request) -> web.Response:
        engine_dir, name = _cached_id(await read_json(request))
        key = (sanitise_id(engine_dir), sanitise_id(name))
        cached = await self._cached()
        found = next((m for m in cached if (m.engine, m.model) == key and m.files), None)
        model_id = f"{engine_dir}/{name}"
        if found is None:
            raise ApiError(404, "unknown_model", f"model {model_id} is not in the model cache")
        model_id = f"{found.engine}/{found.model}"
        try:
            engine = self.deps.engines.resolve(found.engine, model_id)
        except JobError as exc:
            raise ApiError(400, "engine_missing", exc.message) from None
        if not isinstance(engine, HostedEngine):
            raise ApiError(400, "not_loadable", f"engine {engine.name} loads no model")
        wire, paths = model_source(found)
        source = ModelSource.model_validate(wire)
        async with self._gate(f"load {model_id}"):
            log.info("loading %s into engine %s", model_id, engine.name, extra={"op": "load"})
            try:
                await asyncio.to_thread(engine.host.preload, source, paths)
            except JobError as exc:
                log.warning("load of %s failed: %s", model_id, exc.message, extra={"op": "load"})
                status = 500 if exc.retryable else 400
                raise ApiError(status, "load_failed", exc.message) from None
        log.info("%s is resident in engine %s", model_id, engine.name, extra={"op": "load"})
        return web.json_response(
            {
                "ok": True,
                "id": model_id,
                "engine": engine.name,
                "pid": engine.host.pid,
                "resident": resident_entries(engine, cached),
            }
        )

    async def unload(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        name = body.get("engine")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "bad_request", "engine: must name an engine, e.g. llama")
        engine = self.deps.engines.named(name.strip())
        if engine is None:
            names = ", ".join(self.deps.engines.names)
            raise ApiError(404, "unknown_engine", f"no engine {name} here (engines: {names})")
        async with self._gate(f"unload {engine.name}"):
            if isinstance(engine, HostedEngine):
                pid = await asyncio.to_thread(engine.host.unload)
            else:
                pid = None
                await asyncio.to_thread(engine.unload)
        log.info(
            "engine %s unloaded from the local API%s",
            engine.name,
            f" (process {pid} stopped)" if pid else " (no process was running)",
            extra={"op": "unload"},
        )
        return web.json_response(
            {"ok": True, "engine": engine.name, "stopped": pid is not None, "pid": pid}
        )

    async def unload_holders(self, folder: Path) -> list[str]:
        """Stop every engine process holding a file of `folder` (a model about to be
        deleted); the engines' names. `409 busy` while the job gate is held."""
        holders = [
            engine
            for engine in self.deps.engines.engines
            if isinstance(engine, HostedEngine)
            and any(Path(p) == folder or folder in Path(p).parents for p in engine.resident())
        ]
        for engine in holders:
            async with self._gate(f"unload {engine.name}"):
                pid = await asyncio.to_thread(engine.host.unload)
            log.info(
                "engine %s unloaded (process %s stopped): its model %s is being deleted",
                engine.name,
                pid,
                folder.name,
                extra={"op": "unload"},
            )
        return [engine.name for engine in holders]

    # ---- pulls ------------------------------------------------------------------------

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
