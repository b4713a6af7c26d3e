"""Multipart `complete` upload with retry (protocol §2.3).

Parts, in order: `prompt` (the full prompt), `ext`, `image` (the bytes, filename
`<jobId>.<ext>`, MIME from the table). 5xx and transport errors are retried: 3 attempts
in all, pausing 1 s x attempt between them. 4xx are final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx

from studio_worker.domain.results import BinaryResult, JobError, mime_for_ext
from studio_worker.protocol.urls import StudioLink, complete_url

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3
UPLOAD_RETRY_PAUSE_S = 1.0
STUDIO_HTTP_TIMEOUT_S = 60.0
ERROR_BODY_MAX_CHARS = 300


class UploadError(JobError):
    """The studio did not take the result; the job is failed with `retryable: true`."""

    retryable = True


class NotHeld(UploadError):
    """409: the studio does not hold this job for this worker (§2.3) — it was taken back,
    or already has this result. A `fail` for it would be a protocol violation (§3.5)."""


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= ERROR_BODY_MAX_CHARS else text[:ERROR_BODY_MAX_CHARS] + "…"


class ResultUploader:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pause_s: float = UPLOAD_RETRY_PAUSE_S,
    ) -> None:
        self._http = http
        self._sleep = sleep
        self._pause_s = pause_s

    async def upload(
        self,
        link: StudioLink,
        job_id: str,
        prompt: str,
        result: BinaryResult,
    ) -> None:
        url = complete_url(link.base_url, link.worker_id, job_id)
        mime = mime_for_ext(result.ext)
        log.info(
            "uploading result",
            extra={
                "op": "complete",
                "job_id": job_id,
                "ext": result.ext,
                "mime": mime,
                "bytes": len(result.data),
            },
        )
        last_error = ""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                response = await self._http.post(
                    url,
                    headers={"Authorization": f"Bearer {link.auth_token}"},
                    data={"prompt": prompt, "ext": result.ext},
                    files={"image": (f"{job_id}.{result.ext}", result.data, mime)},
                    timeout=STUDIO_HTTP_TIMEOUT_S,
                )
            except httpx.TransportError as exc:
                last_error = f"complete failed: {type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    log.debug("binary upload ok", extra={"op": "complete", "job_id": job_id})
                    return
                last_error = (
                    f"complete failed: {response.status_code} {response.reason_phrase}"
                    f" — {_clip(response.text)}"
                )
                if response.status_code == 409:
                    raise NotHeld(last_error)
                if response.status_code < 500:
                    break  # 4xx: the studio will not take it on a second try either
            log.warning(
                "%s (attempt %d of %d)",
                last_error,
                attempt,
                UPLOAD_ATTEMPTS,
                extra={"op": "complete", "job_id": job_id},
            )
            if attempt < UPLOAD_ATTEMPTS:
                await self._sleep(self._pause_s * attempt)
        raise UploadError(last_error)
