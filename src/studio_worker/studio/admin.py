"""The operator's JSON API under `/admin/`, guarded by `Authorization: Bearer <admin token>`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from studio_worker.studio.core import NotFound, StudioCore, SubmissionError
from studio_worker.studio.records import same_secret
from studio_worker.studio.ws import bearer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class AdminRoutes:
    def __init__(self, core: StudioCore, admin_token: str) -> None:
        self._core = core
        self._token = admin_token

    def routes(self) -> list[web.RouteDef]:
        g = self._guard
        return [
            web.get("/admin/requests", g(self.list_requests)),
            web.post("/admin/requests/{requestId}/approve", g(self.approve)),
            web.post("/admin/requests/{requestId}/reject", g(self.reject)),
            web.get("/admin/workers", g(self.list_workers)),
            web.delete("/admin/workers/{workerId}", g(self.delete_worker)),
            web.post("/admin/workers/{workerId}/revoke", g(self.revoke)),
            web.get("/admin/workers/{workerId}/logs", g(self.logs)),
            web.get("/admin/jobs", g(self.list_jobs)),
            web.post("/admin/jobs", g(self.submit)),
            web.get("/admin/jobs/{jobId}", g(self.get_job)),
            web.get("/admin/jobs/{jobId}/result", g(self.result)),
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            token = bearer(request)
            if token is None or not same_secret(token, self._token):
                return _error(401, "admin token required")
            try:
                return await handler(request)
            except NotFound as exc:
                return _error(404, str(exc))
            except SubmissionError as exc:
                return _error(400, str(exc))
            except ValueError as exc:
                return _error(409, str(exc))

        return guarded

    async def list_requests(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        return web.json_response([r.to_json() for r in self._core.requests(status)])

    async def approve(self, request: web.Request) -> web.Response:
        worker_id = self._core.approve(request.match_info["requestId"])
        return web.json_response({"ok": True, "workerId": worker_id})

    async def reject(self, request: web.Request) -> web.Response:
        body = await _json_body(request, allow_empty=True)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise SubmissionError("reason must be a string")
        self._core.reject(request.match_info["requestId"], reason)
        return web.json_response({"ok": True})

    async def list_workers(self, request: web.Request) -> web.Response:
        return web.json_response(self._core.workers())

    async def delete_worker(self, request: web.Request) -> web.Response:
        await self._core.delete_worker(request.match_info["workerId"])
        return web.json_response({"ok": True})

    async def revoke(self, request: web.Request) -> web.Response:
        await self._core.revoke(request.match_info["workerId"])
        return web.json_response({"ok": True})

    async def logs(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            raise SubmissionError("limit must be an integer") from None
        entries = self._core.worker_logs(request.match_info["workerId"], limit)
        return web.json_response([e.to_wire() for e in entries])

    async def list_jobs(self, request: web.Request) -> web.Response:
        jobs = self._core.list_jobs(request.query.get("status"))
        return web.json_response([j.to_json() for j in jobs])

    async def submit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        kind, task, model = body.get("kind"), body.get("task"), body.get("model")
        if not isinstance(kind, str) or not isinstance(model, str) or not isinstance(task, dict):
            raise SubmissionError("body needs kind (string), task (object) and model (string)")
        vram = body.get("vramGbEstimate", 0.0)
        if not isinstance(vram, int | float) or isinstance(vram, bool):
            raise SubmissionError("vramGbEstimate must be a number")
        source = body.get("modelSource")
        if source is not None and not isinstance(source, dict):
            raise SubmissionError("modelSource must be an object")
        job_id = self._core.submit_job(
            kind,
            task,
            model,
            model_source=source,
            vram_gb_estimate=float(vram),
            game_id=str(body.get("gameId") or "local"),
            asset_name=str(body.get("assetName") or ""),
        )
        return web.json_response({"jobId": job_id}, status=201)

    async def get_job(self, request: web.Request) -> web.Response:
        job = self._core.get_job(request.match_info["jobId"])
        if job is None:
            raise NotFound(f"unknown job {request.match_info['jobId']}")
        deliveries = self._core.jobs.deliveries.get(job.id, 0)
        return web.json_response({**job.to_json(), "deliveries": deliveries})

    async def result(self, request: web.Request) -> web.StreamResponse:
        job = self._core.get_job(request.match_info["jobId"])
        if job is None:
            raise NotFound(f"unknown job {request.match_info['jobId']}")
        if job.result_path is not None:
            return web.FileResponse(
                job.result_path,
                headers={
                    "Content-Type": job.mime or "application/octet-stream",
                    "Content-Disposition": f'attachment; filename="{job.id}.{job.ext}"',
                },
            )
        if job.status.value == "done":
            return web.json_response(job.result)
        raise NotFound(f"job {job.id} has no result ({job.status.value})")


async def _json_body(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise SubmissionError("body is not JSON") from None
    if not isinstance(body, dict):
        raise SubmissionError("body must be a JSON object")
    return body
