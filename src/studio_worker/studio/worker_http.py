"""The three worker HTTP routes (protocol §2): register-request, poll, multipart complete."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

from aiohttp import BodyPartReader, hdrs, web
from pydantic import Field, ValidationError

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.domain.results import mime_for_ext
from studio_worker.domain.wire import WireModel
from studio_worker.studio.hub import Hub
from studio_worker.studio.jobbook import JobBook
from studio_worker.studio.records import RequestStatus, mint_token, same_secret, token_hash
from studio_worker.studio.store import Store
from studio_worker.studio.ws import bearer

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024 * 1024
# A result up to this size is held in memory until the upload is complete and checked,
# then written and moved into place in one step off the event loop; a larger one is
# streamed to a spool file as it arrives.
IN_MEMORY_RESULT_BYTES = 1024 * 1024
_EXT = re.compile(r"^[A-Za-z0-9]{1,10}$")


class RegisterRequestBody(WireModel):
    """Body of `POST /workers/register-request` (§2.1)."""

    install_id: str = Field(min_length=1, max_length=200)
    registration_secret_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    capabilities: WorkerCapabilities
    user_agent: str = Field(default="", max_length=200)


class RateLimiter:
    """At most `limit` hits per `window` seconds per key (sliding window)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now = self._clock()
        hits = self._hits[key]
        while hits and now - hits[0] >= self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True


class WorkerRoutes:
    def __init__(
        self, store: Store, jobs: JobBook, hub: Hub, results_dir: Path, limiter: RateLimiter
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._hub = hub
        self._results = results_dir
        self._limiter = limiter

    async def register_request(self, request: web.Request) -> web.Response:
        if not self._limiter.allow(request.remote or "unknown"):
            return web.json_response({"error": "too many register requests"}, status=429)
        try:
            body = RegisterRequestBody.model_validate_json(await request.read())
        except ValidationError as exc:
            return web.json_response({"error": _first_error(exc)}, status=400)
        caps = body.capabilities.to_wire()
        existing = self._store.pending_request_for(body.install_id)
        if existing is not None:
            # Same install asking again (e.g. it lost its request id): keep one request,
            # bound to the newest secret so the asker can poll it.
            self._store.refresh_request(existing.id, body.registration_secret_hash, caps)
            return web.json_response({"requestId": existing.id, "status": "pending"})
        created = self._store.add_request(
            body.install_id,
            body.registration_secret_hash,
            caps,
            body.user_agent,
            request.remote or "unknown",
        )
        log.info("register request %s from %s", created.id, created.source_ip)
        return web.json_response({"requestId": created.id, "status": "pending"})

    async def poll(self, request: web.Request) -> web.Response:
        req = self._store.get_request(request.match_info["requestId"])
        if req is None:
            return web.json_response({"error": "unknown register request"}, status=404)
        secret = bearer(request)
        if secret is None or not same_secret(token_hash(secret), req.secret_hash):
            return web.json_response({"error": "bad registration secret"}, status=401)
        if req.status is RequestStatus.APPROVED and req.worker_id:
            worker = self._store.get_worker(req.worker_id)
            if worker is None or worker.deleted_at is not None:
                return web.json_response({"status": "rejected", "reason": "worker deleted"})
            token = mint_token()  # a fresh token on every poll after approval (§2.2)
            self._store.add_token(req.worker_id, token)
            return web.json_response(
                {"status": "approved", "workerId": req.worker_id, "authToken": token}
            )
        if req.status is RequestStatus.REJECTED:
            return web.json_response({"status": "rejected", "reason": req.reason or ""})
        return web.json_response({"status": "pending"})

    async def complete(self, request: web.Request) -> web.Response:
        worker_id = request.match_info["workerId"]
        job_id = request.match_info["jobId"]
        token = bearer(request)
        if token is None or not self._store.token_valid(worker_id, token):
            return web.json_response({"error": "invalid auth token"}, status=401)
        if self._jobs.holds(worker_id, job_id) is None:
            return web.json_response({"error": "job not claimed by this worker"}, status=409)
        spool = self._results / f"{job_id}.{secrets.token_hex(4)}.upload"
        try:
            prompt, ext, mime, size, held = await _read_parts(request, spool)
        except ValueError as exc:
            await asyncio.to_thread(spool.unlink, missing_ok=True)
            return web.json_response({"error": str(exc)}, status=400)
        path = self._results / f"{job_id}.{ext}"
        await asyncio.to_thread(_settle, held, spool, path)
        if self._jobs.holds(worker_id, job_id) is None:  # lost it while uploading
            return web.json_response({"error": "job not claimed by this worker"}, status=409)
        self._jobs.complete_file(job_id, path=path, ext=ext, mime=mime, size=size, prompt=prompt)
        log.info("job %s done: %d bytes .%s from %s", job_id, size, ext, worker_id)
        self._hub.wake()  # push the next offer (§2.3)
        return web.json_response({"ok": True})


async def _read_parts(request: web.Request, spool: Path) -> tuple[str, str, str, int, bytes | None]:
    """Read the `prompt`, `ext` and `image` parts (§2.3).

    The image's bytes come back when small (`IN_MEMORY_RESULT_BYTES`), else they are
    in `spool` and None comes back.
    """
    # The raw header, not `request.content_type`: that one runs the e-mail header
    # parser, ~0.4 ms for a boundary it has not seen (every upload has a new one).
    media_type = request.headers.get(hdrs.CONTENT_TYPE, "").split(";", 1)[0]
    if not media_type.strip().lower().startswith("multipart/"):
        raise ValueError("expected multipart/form-data")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    size: int | None = None
    held: bytes | None = None
    mime = ""
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        name = _part_name(part)
        if name == "image":
            size, held = await _spool(part, spool)
            mime = part.headers.get("Content-Type", "")
        elif name in ("prompt", "ext"):
            fields[name] = await part.text()
        else:
            await part.release()
    ext = fields.get("ext", "").strip().lower()
    if not _EXT.match(ext):
        raise ValueError("part `ext` missing or not a plain extension")
    if size is None:
        raise ValueError("part `image` missing")
    return fields.get("prompt", ""), ext, mime or mime_for_ext(ext), size, held


# `form-data; name="…"` with at most a plain `filename`, as every multipart client writes
# it: read here directly; anything else goes to aiohttp's full parser (`part.name`),
# which costs ~70 us a part.
_PLAIN_DISPOSITION = re.compile(r'form-data; name="([A-Za-z0-9_.-]*)"(?:; filename="[^"\\%]*")?')


def _part_name(part: BodyPartReader) -> str | None:
    plain = _PLAIN_DISPOSITION.fullmatch(part.headers.get(hdrs.CONTENT_DISPOSITION, ""))
    return plain.group(1) if plain else part.name


async def _spool(part: BodyPartReader, spool: Path) -> tuple[int, bytes | None]:
    """Read a file part: (size, bytes) when small, else (size, None) with it in `spool`.

    A large part is streamed to disk in 1 MiB chunks; more than MAX_RESULT_BYTES is
    refused.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(1 << 20):
        chunks.append(chunk)
        size += len(chunk)
        if size > IN_MEMORY_RESULT_BYTES:
            break
    else:
        return size, b"".join(chunks)
    fh = await asyncio.to_thread(spool.open, "wb")
    try:
        await asyncio.to_thread(fh.writelines, chunks)
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
            if size > MAX_RESULT_BYTES:
                raise ValueError("result too large")
            await asyncio.to_thread(fh.write, chunk)
    finally:
        await asyncio.to_thread(fh.close)
    return size, None


def _settle(held: bytes | None, spool: Path, path: Path) -> None:
    """Put the result at `path`, whole or not at all: written to `spool`, then renamed."""
    if held is not None:
        spool.write_bytes(held)
    spool.replace(path)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
