"""`StatusStore`: the one writer of what the worker is doing; readers take snapshots."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from studio_worker.domain.logs import rfc3339_millis
from studio_worker.protocol.outcomes import SessionState

RECENT_JOBS_CAP = 50
DECLINED_OFFERS_CAP = 20  # "why no jobs": the last offers this worker turned down


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    kind: str
    model: str
    engine: str
    prompt_preview: str
    started_at: str
    outcome: str = "running"  # running | completed | failed
    error: str | None = None
    elapsed_ms: int | None = None
    retryable: bool | None = None
    progress: float | None = None  # 0.0-1.0 while running, as the engine reports it
    progress_note: str | None = None


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    """One model file being fetched: what the status board shows while bytes arrive."""

    model: str
    filename: str
    done: int
    total: int | None
    rate_bps: float
    eta_s: float | None
    updated_at: str


@dataclass(frozen=True, slots=True)
class DeclinedOffer:
    """An offer answered `reject`: the wire code (`paused`, `busy`) and the reason sent."""

    job_id: str
    kind: str
    model: str
    code: str
    reason: str
    at: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    session_state: SessionState
    session_attempt: int
    session_reason: str
    registration: dict[str, str]
    heartbeat: dict[str, str] | None
    paused: bool
    current_job: JobRecord | None
    recent_jobs: tuple[JobRecord, ...]
    worker_id: str | None
    downloads: tuple[DownloadRecord, ...] = ()
    declined: tuple[DeclinedOffer, ...] = ()
    taken_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        session: dict[str, Any] = {"state": self.session_state.value}
        if self.session_state is SessionState.RECONNECTING:
            session["attempt"] = self.session_attempt
        if self.session_state in (SessionState.AUTH_FAILED, SessionState.FATAL):
            session["reason"] = self.session_reason
        return {
            "session": session,
            "registration": self.registration,
            "heartbeat": self.heartbeat,
            "paused": self.paused,
            "busy": self.current_job is not None,
            "currentJob": _running_json(self.current_job, self.taken_at)
            if self.current_job
            else None,
            "recentJobs": [_job_json(job) for job in self.recent_jobs],
            "workerId": self.worker_id,
            "downloads": [_download_json(d) for d in self.downloads],
            "declinedOffers": [_declined_json(d) for d in self.declined],
        }


def _job_json(job: JobRecord) -> dict[str, Any]:
    return {
        "jobId": job.job_id,
        "kind": job.kind,
        "model": job.model,
        "engine": job.engine,
        "prompt": job.prompt_preview,
        "startedAt": job.started_at,
        "outcome": job.outcome,
        "error": job.error,
        "elapsedMs": job.elapsed_ms,
        "progress": job.progress,
        "progressNote": job.progress_note,
    }


def _running_json(job: JobRecord, now: datetime | None) -> dict[str, Any]:
    """A running job, with `elapsedMs` so far (its `startedAt` against the snapshot time)."""
    out = _job_json(job)
    if now is not None and job.elapsed_ms is None:
        try:
            started = datetime.fromisoformat(job.started_at.replace("Z", "+00:00"))
        except ValueError:
            return out
        out["elapsedMs"] = max(0, int((now - started).total_seconds() * 1000))
    return out


def _declined_json(offer: DeclinedOffer) -> dict[str, Any]:
    return {
        "jobId": offer.job_id,
        "kind": offer.kind,
        "model": offer.model,
        "code": offer.code,
        "reason": offer.reason,
        "at": offer.at,
    }


def _download_json(download: DownloadRecord) -> dict[str, Any]:
    return {
        "model": download.model,
        "filename": download.filename,
        "bytesDone": download.done,
        "bytesTotal": download.total,
        "bytesPerSec": round(download.rate_bps, 1),
        "etaSecs": None if download.eta_s is None else round(download.eta_s, 1),
        "updatedAt": download.updated_at,
    }


@dataclass
class _State:
    session_state: SessionState = SessionState.WAITING_FOR_APPROVAL
    session_attempt: int = 0
    session_reason: str = ""
    registration: dict[str, str] = field(default_factory=lambda: {"state": "pristine"})
    heartbeat: dict[str, str] | None = None
    paused: bool = False
    current_job: JobRecord | None = None
    recent_jobs: deque[JobRecord] = field(default_factory=lambda: deque(maxlen=RECENT_JOBS_CAP))
    worker_id: str | None = None
    downloads: dict[tuple[str, str], DownloadRecord] = field(default_factory=dict)
    declined: deque[DeclinedOffer] = field(
        default_factory=lambda: deque(maxlen=DECLINED_OFFERS_CAP)
    )


class StatusStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._s = _State()

    def snapshot(self) -> Snapshot:
        with self._lock:
            s = self._s
            return Snapshot(
                s.session_state,
                s.session_attempt,
                s.session_reason,
                dict(s.registration),
                dict(s.heartbeat) if s.heartbeat else None,
                s.paused,
                s.current_job,
                tuple(s.recent_jobs),
                s.worker_id,
                tuple(s.downloads.values()),
                tuple(s.declined),
                datetime.now(UTC),
            )

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._s.paused

    @property
    def current_job_id(self) -> str | None:
        with self._lock:
            return self._s.current_job.job_id if self._s.current_job else None

    def set_session(self, state: SessionState, *, attempt: int = 0, reason: str = "") -> None:
        with self._lock:
            self._s.session_state, self._s.session_attempt = state, attempt
            self._s.session_reason = reason

    def set_registration(self, snapshot: dict[str, str]) -> None:
        with self._lock:
            self._s.registration = dict(snapshot)

    def set_worker_id(self, worker_id: str | None) -> None:
        with self._lock:
            self._s.worker_id = worker_id

    def set_paused(self, paused: bool) -> bool:
        """Set the pause flag; True when it changed."""
        with self._lock:
            changed = self._s.paused != paused
            self._s.paused = paused
            return changed

    def heartbeat_ok(self, at: datetime | None = None) -> None:
        with self._lock:
            self._s.heartbeat = {"outcome": "ok", "lastAttemptAt": _ts(at)}

    def heartbeat_failed(self, reason: str, at: datetime | None = None) -> None:
        with self._lock:
            self._s.heartbeat = {"outcome": "err", "reason": reason, "lastAttemptAt": _ts(at)}

    def job_started(self, record: JobRecord) -> None:
        with self._lock:
            self._s.current_job = record

    def job_progress(self, job_id: str, fraction: float, note: str) -> None:
        """Record how far the current job is (fraction clamped to 0-1); other ids are ignored."""
        fraction = 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)
        with self._lock:
            current = self._s.current_job
            if current is None or current.job_id != job_id:
                return
            self._s.current_job = replace(current, progress=fraction, progress_note=note)

    def download_progress(  # noqa: PLR0917 - the fields of a models DownloadProgress, in order
        self,
        model: str,
        filename: str,
        done: int,
        total: int | None,
        rate_bps: float,
        eta_s: float | None,
        finished: bool,
        *,
        at: datetime | None = None,
    ) -> None:
        """Show a model file download; a finished one (done or given up) leaves the board."""
        key = (model, filename)
        with self._lock:
            if finished:
                self._s.downloads.pop(key, None)
                return
            self._s.downloads[key] = DownloadRecord(
                model, filename, done, total, rate_bps, eta_s, _ts(at)
            )

    def offer_declined(
        self,
        job_id: str,
        kind: str,
        model: str,
        code: str,
        reason: str,
        *,
        at: datetime | None = None,
    ) -> None:
        """Remember a rejected offer, newest first (the dashboard's "why no jobs")."""
        with self._lock:
            self._s.declined.appendleft(DeclinedOffer(job_id, kind, model, code, reason, _ts(at)))

    def job_finished(self, job_id: str, outcome: str, elapsed_ms: int, error: str | None) -> None:
        with self._lock:
            current = self._s.current_job
            if current is None or current.job_id != job_id:
                return
            done = replace(current, outcome=outcome, elapsed_ms=elapsed_ms, error=error)
            self._s.current_job = None
            self._s.recent_jobs.appendleft(done)


def _ts(at: datetime | None) -> str:
    return rfc3339_millis(at or datetime.now(UTC))
