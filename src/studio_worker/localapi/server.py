"""The local API server (behaviour §8): binding, discovery, guards and the daemon routes.

Bound to 127.0.0.1 only. Port: a valid `STUDIO_WORKER_LOCAL_API_PORT` > `local_api_port`
> 4787; a taken port falls back to an ephemeral one; a bind failure is logged and the
daemon carries on without a local API. The bearer token is `local_api_token` from the
config when set, else a fresh random one per start; both land in `local-api.json` next to
the config (atomic, owner-only), which is removed on a clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import secrets
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from studio_worker import __version__
from studio_worker.config.errors import ConfigError
from studio_worker.config.live import LiveConfig
from studio_worker.config.paths import state_file
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.engines.registry import EngineRegistry
from studio_worker.jobs.gate import JobGate
from studio_worker.localapi import dashboard, guards
from studio_worker.localapi.http import BODY_CAP_KEY, ApiError, TextError, json_error, read_json
from studio_worker.localapi.inference import Inference
from studio_worker.localapi.logring import LogRing
from studio_worker.localapi.models_routes import ModelsRoutes
from studio_worker.localapi.prefs_routes import PrefsRoutes
from studio_worker.localapi.update_routes import UpdateRoutes
from studio_worker.models import ModelError, ModelNotCached, ModelStore
from studio_worker.models.store import disk_free_bytes
from studio_worker.platform.updater import Updater
from studio_worker.status.store import StatusStore

log = logging.getLogger(__name__)

DEFAULT_LOCAL_API_PORT = 4787
PORT_ENV = "STUDIO_WORKER_LOCAL_API_PORT"
DISCOVERY_FILE = "local-api.json"
LOCAL_JOB_PREFIX = "local-"
MEDIA_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/images/generations"})
SHUTDOWN_DELAY_S = 0.05

# camelCase key on the API -> Settings field. Never a token, secret or credential.
EDITABLE: Mapping[str, str] = {
    "apiBaseUrl": "api_base_url",
    "vramThresholdGb": "vram_threshold_gb",
    "startMinimised": "start_minimised",
    "autoStart": "auto_start",
    "onlyWhenIdle": "only_when_idle",
    "autoUpdateEnabled": "auto_update_enabled",
    "autoUpdateIntervalSecs": "auto_update_interval_secs",
    "autoUpdateFeed": "auto_update_feed",
    "autoUpdatePrerelease": "auto_update_prerelease",
    "modelsRoot": "models_root",
    "localApiPort": "local_api_port",
}
RESTART_FIELDS = frozenset({"models_root", "local_api_port"})
MIN_AUTO_UPDATE_INTERVAL_SECS = 60


@dataclass
class LocalApiDeps:
    """What the local API reads and drives; the daemon builds it in `_serve_with_engines`."""

    config_path: Path
    store: ConfigStore
    live: LiveConfig
    status: StatusStore
    gate: JobGate
    engines: EngineRegistry
    models: ModelStore
    ring: LogRing
    stop: asyncio.Event
    reset_registration: Callable[[], bool] = lambda: False
    vram_total_gb: Callable[[], float] = lambda: 0.0
    updater: Updater | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def choose_port(env: Mapping[str, str], configured: int | None) -> int:
    raw = env.get(PORT_ENV, "").strip()
    if raw:
        if raw.isdigit() and 0 <= int(raw) <= 65535:
            return int(raw)
        log.warning("%s is not a valid port; falling back", PORT_ENV)
    return DEFAULT_LOCAL_API_PORT if configured is None else configured


def editable_config(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in EDITABLE.items():
        value = getattr(settings, name)
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def _http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value.strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def validate_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Settings changes a PUT asks for; ApiError on the first bad field."""
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        raise ApiError(400, "bad_request", f"not an editable config field: {', '.join(unknown)}")

    def bad(key: str, problem: str) -> ApiError:
        return ApiError(400, "invalid_config", f"{key}: {problem}")

    changes: dict[str, Any] = {}
    for key, value in body.items():
        name = EDITABLE[key]
        if key in ("apiBaseUrl", "autoUpdateFeed"):
            if not _http_url(value):
                raise bad(key, "must be an http(s) URL")
        elif key == "vramThresholdGb":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise bad(key, "must be a number of GB, 0 or more")
        elif key == "autoUpdateIntervalSecs":
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(key, "must be a whole number of seconds")
            if value < MIN_AUTO_UPDATE_INTERVAL_SECS:
                raise bad(key, "must be at least 60 seconds")
        elif key == "modelsRoot":
            if not isinstance(value, str) or not value.strip():
                raise bad(key, "must not be empty")
        elif key == "localApiPort":
            port_ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if value is not None and not (port_ok and value <= 65535):
                raise bad(key, "must be a port number (0-65535) or null")
        elif not isinstance(value, bool):
            raise bad(key, "must be true or false")
        changes[name] = value
    return changes


def _write_owner_only(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if sys.platform != "win32":
                os.fchmod(handle.fileno(), 0o600)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LocalApi:
    def __init__(self, deps: LocalApiDeps) -> None:
        self.deps = deps
        settings = deps.live.current
        self.token = settings.local_api_token or secrets.token_hex(32)
        self.url: str | None = None
        self.discovery = state_file(deps.config_path, DISCOVERY_FILE)
        self.cancel = threading.Event()  # set on close: running local jobs stop early
        self._runner: web.AppRunner | None = None
        self._inputs: dict[str, tuple[bytes, str]] = {}
        self.inference = Inference(self)
        self.models_routes = ModelsRoutes(deps)

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> str | None:
        """Bind and write the discovery file; None (logged) when nothing could be bound."""
        app = web.Application(middlewares=[self._guard], client_max_size=guards.MAX_BODY_BYTES)
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        port = choose_port(self.deps.env, self.deps.live.current.local_api_port)
        try:
            bound = await self._bind(runner, port)
        except OSError as exc:
            log.warning(
                "local API could not bind 127.0.0.1: %s; carrying on without it",
                exc,
                extra={"op": "bind"},
            )
            await runner.cleanup()
            return None
        self._runner = runner
        self.url = f"http://127.0.0.1:{bound}"
        payload = json.dumps({"url": self.url, "token": self.token}, indent=2).encode()
        try:
            await asyncio.to_thread(_write_owner_only, self.discovery, payload)
        except OSError as exc:
            log.warning("could not write %s: %s", self.discovery, exc, extra={"op": "discovery"})
        else:
            log.info(
                "local API listening on %s (discovery %s)",
                self.url,
                self.discovery,
                extra={"op": "discovery"},
            )
        return self.url

    async def _bind(self, runner: web.AppRunner, port: int) -> int:
        try:
            site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=False)
            await site.start()
        except OSError as exc:
            if port == 0 or exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            log.info("local API port %d is taken; using an ephemeral port", port)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        address = runner.addresses[-1]
        return int(address[1])

    async def close(self) -> None:
        self.cancel.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            self.discovery.unlink()

    # ---- guards -----------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (request.method == "GET" and path == "/healthz"):
            denial = guards.check_host(request.headers.get("Host")) or guards.check_origin(
                request.headers.get("Origin")
            )
            public = path.startswith("/_inputs/") or dashboard.is_public(request.method, path)
            if denial is None and not public:
                # one-shot input URLs carry their own unguessable capability; the
                # dashboard's static files carry nothing (its data routes need the token)
                denial = guards.check_bearer(request.headers.get("Authorization"), self.token)
            if denial is not None:
                status, text = denial
                log.warning(
                    "local API denied %s %s: %s", request.method, path, text, extra={"op": "deny"}
                )
                return web.Response(status=status, text=text)
        cap = guards.MAX_MEDIA_BODY_BYTES if path in MEDIA_PATHS else guards.MAX_BODY_BYTES
        declared = request.content_length
        if declared is not None and declared > cap:
            return web.Response(status=413, text=guards.body_too_large(cap))
        request[BODY_CAP_KEY] = cap
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except TextError as exc:
            return exc.response()
        except web.HTTPNotFound:
            if path.startswith("/daemon/"):
                return json_error(404, "not_found", f"no such route: {request.method} {path}")
            return web.Response(status=404, text="not found")

    # ---- routes -----------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        add = app.router
        add.add_get("/healthz", self.healthz)
        add.add_get("/daemon/status", self.daemon_status)
        add.add_get("/daemon/logs", self.daemon_logs)
        add.add_post("/daemon/pause", self.pause)
        add.add_post("/daemon/resume", self.resume)
        add.add_get("/daemon/config", self.get_config)
        add.add_put("/daemon/config", self.put_config)
        add.add_post("/daemon/registration/reset", self.registration_reset)
        add.add_post("/daemon/shutdown", self.shutdown)
        add.add_get("/jobs", self.jobs)
        add.add_get("/jobs/{job_id}/log", self.job_log)
        add.add_delete("/models/{engine}/{model}", self.delete_model)
        add.add_get("/_inputs/{key}", self.one_shot_input)
        self.inference.routes(app)
        PrefsRoutes(self.deps).routes(app)  # before the dashboard's /ui/{name}
        dashboard.DashboardRoutes(self.deps, lambda: self.url).routes(app)
        self.models_routes.routes(app)
        UpdateRoutes(self.deps).routes(app)

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            root = self.deps.live.current.models_root
            free = await asyncio.to_thread(disk_free_bytes, root)
            body: dict[str, Any] = {
                "ok": True,
                "version": __version__,
                "busy": self.deps.gate.busy,
                "engine": "multi",
                "modelsRoot": str(root),
                "modelsRootFreeBytes": free,
                "gpuRuntime": None,
            }
        except Exception:  # never fails
            body = {"ok": True}
        return web.json_response(body)

    def _jobs_json(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        snap = self.deps.status.snapshot().to_json()
        current, recent = snap["currentJob"], snap["recentJobs"]
        for job in [current, *recent]:
            if job is not None:
                local = str(job["jobId"]).startswith(LOCAL_JOB_PREFIX)
                job["source"] = "local" if local else "studio"
        return current, recent

    async def daemon_status(self, request: web.Request) -> web.Response:
        snap = self.deps.status.snapshot()
        body = snap.to_json()
        current, recent = self._jobs_json()
        settings = self.deps.live.current
        body.update(
            {
                "version": __version__,
                "pid": os.getpid(),
                "configPath": str(self.deps.config_path),
                "registered": bool(settings.worker_id and settings.auth_token),
                "config": editable_config(settings),
                "vramTotalGb": self.deps.vram_total_gb(),
                "localApiUrl": self.url,
                "currentJob": current,
                "currentJobId": current["jobId"] if current else None,
                "activeJobs": [current] if current else [],
                "recentJobs": recent,
                "localJobs": [job for job in recent if job["source"] == "local"],
                "gateHolder": self.deps.gate.holder,
                "engines": self.deps.engines.names,
                "logsSeq": self.deps.ring.seq,
            }
        )
        return web.json_response(body)

    async def daemon_logs(self, request: web.Request) -> web.Response:
        raw = request.query.get("after", "0")
        try:
            after = int(raw)
        except ValueError:
            raise ApiError(400, "bad_request", "after: must be a whole number") from None
        entries, seq = self.deps.ring.since(after)
        return web.json_response({"entries": entries, "seq": seq})

    async def _set_paused(self, paused: bool) -> web.Response:
        try:
            await asyncio.to_thread(self.deps.store.update, paused=paused)
        except ConfigError as exc:
            raise ApiError(500, "config_not_saved", str(exc)) from None
        if self.deps.status.set_paused(paused):
            log.info(
                "claiming %s by operator (local API)",
                "paused" if paused else "resumed",
                extra={"op": "control", "action": "pause" if paused else "resume"},
            )
        return web.json_response({"paused": paused})

    async def pause(self, request: web.Request) -> web.Response:
        return await self._set_paused(True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._set_paused(False)

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(editable_config(self.deps.live.current))

    async def put_config(self, request: web.Request) -> web.Response:
        changes = validate_config(await read_json(request))
        before = self.deps.live.current
        try:
            before.replace(**changes)  # the types, before anything is written
        except ConfigError as exc:
            raise ApiError(400, "invalid_config", str(exc)) from None
        try:
            saved = await asyncio.to_thread(self.deps.store.update, **changes)
        except ConfigError as exc:
            raise ApiError(500, "config_not_saved", str(exc)) from None
        changed = [
            key for key, name in EDITABLE.items() if getattr(before, name) != getattr(saved, name)
        ]
        restart = any(EDITABLE[key] in RESTART_FIELDS for key in changed)
        log.info(
            "config saved from the local API: changed=%s",
            ",".join(changed) or "(none)",
            extra={"op": "control", "action": "config", "changed": changed},
        )
        return web.json_response(
            {"config": editable_config(saved), "changed": changed, "restartRequired": restart}
        )

    async def registration_reset(self, request: web.Request) -> web.Response:
        if not self.deps.reset_registration():
            state = self.deps.status.snapshot().registration.get("state", "unknown")
            raise ApiError(
                409, "not_rejected", f"registration is {state}, not rejected: nothing to reset"
            )
        log.info("registration reset from the local API", extra={"op": "control"})
        return web.json_response({"ok": True}, status=202)

    async def shutdown(self, request: web.Request) -> web.Response:
        log.info("shutdown requested through the local API", extra={"op": "control"})
        asyncio.get_running_loop().call_later(SHUTDOWN_DELAY_S, self.deps.stop.set)
        return web.json_response({"ok": True}, status=202)

    async def jobs(self, request: web.Request) -> web.Response:
        current, recent = self._jobs_json()
        return web.json_response({"current": current, "recent": recent})

    async def job_log(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        current, recent = self._jobs_json()
        known = {job["jobId"] for job in [current, *recent] if job is not None}
        lines = self.deps.ring.for_job(job_id)
        if job_id not in known and not lines:
            raise ApiError(404, "unknown_job", f"no job {job_id} in the recent jobs")
        return web.json_response({"lines": lines, "dropped": 0})

    async def delete_model(self, request: web.Request) -> web.Response:
        engine, model = request.match_info["engine"], request.match_info["model"]
        holder = self.deps.gate.holder
        if holder is not None and self.inference.model_in_use(holder, engine, model):
            raise ApiError(409, "model_busy", f"model {engine}/{model} is in use by {holder}")
        folder = self.deps.models.model_dir(engine, model)
        unloaded = await self.models_routes.unload_holders(folder)  # loaded: unloaded first
        try:
            freed = await asyncio.to_thread(self.deps.models.remove, engine, model)
        except ModelNotCached as exc:
            raise ApiError(404, "unknown_model", exc.message) from None
        except ModelError as exc:
            raise ApiError(409, "model_busy", exc.message) from None
        return web.json_response({"ok": True, "freedBytes": freed, "unloaded": unloaded})

    # ---- one-shot inputs (uploaded audio handed to an engine by URL) --------------------

    def offer_input(self, data: bytes, content_type: str) -> tuple[str, str]:
        """Serve `data` once at a random loopback URL; (key, url)."""
        key = secrets.token_urlsafe(32)
        self._inputs[key] = (data, content_type)
        return key, f"{self.url}/_inputs/{key}"

    def drop_input(self, key: str) -> None:
        self._inputs.pop(key, None)

    async def one_shot_input(self, request: web.Request) -> web.Response:
        found = self._inputs.pop(request.match_info["key"], None)
        if found is None:
            return web.Response(status=404, text="not found")
        data, content_type = found
        return web.Response(body=data, content_type=content_type)
