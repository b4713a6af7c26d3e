"""A tray for a daemon that runs in another process (e.g. the `install-service` one).

`ui` runs its own daemon unless one already holds this config's lock; then the tray
attaches to that daemon through its local API (found in `local-api.json`, as behaviour
§12.2's UI does): `GET /daemon/status` once a second, `POST /daemon/pause|resume`. Quit
closes only the tray: the daemon belongs to its service. stdlib `urllib` on loopback, so
no HTTP client library enters this package.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from studio_worker.protocol.outcomes import SessionState
from studio_worker.status.store import JobRecord, Snapshot

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0


def _job(raw: Any) -> JobRecord | None:
    if not isinstance(raw, Mapping):
        return None
    return JobRecord(
        job_id=str(raw.get("jobId", "")),
        kind=str(raw.get("kind", "")),
        model=str(raw.get("model", "")),
        engine=str(raw.get("engine", "")),
        prompt_preview=str(raw.get("prompt", "")),
        started_at=str(raw.get("startedAt", "")),
        outcome=str(raw.get("outcome", "running")),
        error=raw.get("error") if isinstance(raw.get("error"), str) else None,
    )


def snapshot_from_status(body: Mapping[str, Any]) -> Snapshot:
    """The parts of a `GET /daemon/status` answer the tray and the notices read, as a
    `Snapshot` (pure; unknown session states read as `stopped`)."""
    session = body.get("session") if isinstance(body.get("session"), Mapping) else {}
    assert isinstance(session, Mapping)
    try:
        state = SessionState(str(session.get("state")))
    except ValueError:
        state = SessionState.STOPPED
    registration = body.get("registration")
    recent = body.get("recentJobs")
    jobs = tuple(j for j in map(_job, recent if isinstance(recent, list) else []) if j)
    return Snapshot(
        session_state=state,
        session_attempt=int(session.get("attempt") or 0),
        session_reason=str(session.get("reason") or ""),
        registration=(
            {str(k): str(v) for k, v in registration.items()}
            if isinstance(registration, Mapping)
            else {"state": "pristine"}
        ),
        heartbeat=None,
        paused=bool(body.get("paused")),
        current_job=_job(body.get("currentJob")),
        recent_jobs=jobs,
        worker_id=body.get("workerId") if isinstance(body.get("workerId"), str) else None,
    )


class ApiControl:
    """`DaemonControl` over another process's local API; `serve()` waits for Quit."""

    def __init__(
        self,
        discovery: Path,
        *,
        dashboard_url: Callable[[str, str], str],
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._discovery = discovery
        self._dashboard_url = dashboard_url
        self._timeout_s = timeout_s
        self._done = threading.Event()

    def _endpoint(self) -> tuple[str, str] | None:
        """(url, token) from the discovery file, read each time: the daemon writes a new
        one when it restarts."""
        try:
            found = json.loads(self._discovery.read_text(encoding="utf-8"))
            return str(found["url"]), str(found["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _call(self, method: str, path: str) -> Any | None:
        endpoint = self._endpoint()
        if endpoint is None:
            return None
        url, token = endpoint
        request = urllib.request.Request(
            f"{url}{path}", method=method, headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:
                return json.loads(answer.read())
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            log.debug("local API %s %s failed: %s", method, path, exc, extra={"op": "tray"})
            return None

    def snapshot(self) -> Snapshot | None:
        body = self._call("GET", "/daemon/status")
        return snapshot_from_status(body) if isinstance(body, Mapping) else None

    def set_paused(self, paused: bool) -> None:
        if self._call("POST", "/daemon/pause" if paused else "/daemon/resume") is None:
            log.warning("the daemon did not take the %s", "pause" if paused else "resume")

    def quit(self) -> None:
        self._done.set()

    def dashboard_url(self) -> str | None:
        endpoint = self._endpoint()
        return None if endpoint is None else self._dashboard_url(*endpoint)

    def serve(self) -> int:
        self._done.wait()
        return 0
