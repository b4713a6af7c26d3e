"""SQLite persistence of the studio: register requests, workers, tokens, jobs, worker logs.

One connection, used only from the event-loop thread; every write commits at once so a
killed studio loses nothing it acknowledged: a job is in the database before its id is
returned, and done or failed before the worker gets its `completeAck`/`failAck`.

Jobs in memory (records handed out are shared: treat them as read-only):
  * held jobs (offered to or running on a worker) live in memory only. Their row keeps
    saying `queued` until the job is done, failed or requeued, and that write carries
    everything (status, worker, attempts, result) in one commit. One thing rides on
    `running`: the worker that accepted the job, written to the row (which still says
    `queued`) on the event-loop tick after the accept (`save_holders`). After a stop or
    a crash an offered job is simply queued again, as its row says; a running one is
    held again for its worker
    (`resume_interrupted`), which may deliver it after reconnecting — a late result for
    a job the studio no longer holds would be a protocol violation (§3.5) — and the
    hub's stale sweep takes it back if the worker does not return. Reads go through the
    store, which answers held jobs from memory, so no reader sees the difference.
  * recently queued jobs are cached (bounded), so offering one costs no SQL read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from studio_worker.domain.logs import LogEntry
from studio_worker.studio.records import (
    HELD,
    JOB_TRANSITIONS,
    JobRecord,
    JobStatus,
    RegisterRequestRecord,
    RequestStatus,
    WorkerRecord,
    new_id,
    now_iso,
    token_hash,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS register_requests (
  id TEXT PRIMARY KEY, install_id TEXT NOT NULL, secret_hash TEXT NOT NULL,
  capabilities TEXT NOT NULL, user_agent TEXT NOT NULL, source_ip TEXT NOT NULL,
  status TEXT NOT NULL, reason TEXT, worker_id TEXT,
  created_at TEXT NOT NULL, decided_at TEXT);
CREATE TABLE IF NOT EXISTS workers (
  id TEXT PRIMARY KEY, install_id TEXT NOT NULL, capabilities TEXT NOT NULL,
  created_at TEXT NOT NULL, last_seen_at TEXT, deleted_at TEXT);
CREATE TABLE IF NOT EXISTS worker_tokens (
  token_hash TEXT PRIMARY KEY, worker_id TEXT NOT NULL,
  created_at TEXT NOT NULL, revoked_at TEXT);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL, task TEXT NOT NULL,
  model_source TEXT NOT NULL, vram_gb_estimate REAL NOT NULL, game_id TEXT NOT NULL,
  asset_name TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  worker_id TEXT, error TEXT, result_json TEXT, result_path TEXT, ext TEXT, mime TEXT,
  size INTEGER, prompt TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  finished_at TEXT);
CREATE TABLE IF NOT EXISTS worker_logs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, worker_id TEXT NOT NULL, ts TEXT NOT NULL,
  level TEXT NOT NULL, category TEXT NOT NULL, message TEXT NOT NULL, job_id TEXT);
CREATE INDEX IF NOT EXISTS worker_logs_by_worker ON worker_logs(worker_id, id);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
"""


class TransitionError(RuntimeError):
    """A job status change the transition table does not allow."""


class QueuedJob(NamedTuple):
    """What the offer pump needs to match a queued job to a worker (§4.1)."""

    rowid: int
    id: str
    kind: str
    vram_gb_estimate: float


# `set_job` columns -> JobRecord fields, where the names differ.
_FIELD_OF_COLUMN = {"result_json": "result"}

# How many queued jobs the store keeps decoded in memory (the newest ones).
FRESH_CAP = 1024


class Store:
    def __init__(self, db_path: Path, *, log_cap: int = 10_000) -> None:
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a killed studio loses nothing; only a power cut can drop the
        # last commits. FULL would fsync every job state change.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._log_cap = log_cap
        # Held (offered/running) jobs by id, with their rowid: the authority for them.
        self._held: dict[str, tuple[int, JobRecord]] = {}
        self._unsaved_holders: dict[str, str | None] = {}  # job id -> worker, to write
        # Queued jobs, newest last, at most FRESH_CAP: a cache of their rows.
        self._fresh: dict[str, tuple[int, JobRecord]] = {}
        self._load_held()

    def close(self) -> None:
        self.save_holders()
        self._db.close()

    def save_holders(self) -> None:
        """Write the accepting worker of jobs that started running since the last call.

        `set_job(…, RUNNING)` only notes it: the hub calls this once per event-loop tick
        after accepts, so the write is off the accept's path and a result that arrives in
        the same read as its accept (an instant job) makes it unnecessary."""
        if not self._unsaved_holders:
            return
        rows = [(worker_id, jid) for jid, worker_id in self._unsaved_holders.items()]
        with self._transaction():
            self._db.executemany("UPDATE jobs SET worker_id=? WHERE id=?", rows)
        self._unsaved_holders.clear()  # only once written: a failed write is tried again

    def _load_held(self) -> None:
        """Held jobs as the database has them: only rows written by an older studio."""
        rows = self._db.execute(
            "SELECT rowid AS _rowid, * FROM jobs WHERE status IN ('offered','running')"
            " ORDER BY rowid"
        ).fetchall()
        self._held = {row["id"]: (int(row["_rowid"]), _job(row)) for row in rows}
        self._fresh.clear()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Several writes as one commit: all of them or none."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- register requests ------------------------------------------------------

    def pending_request_for(self, install_id: str) -> RegisterRequestRecord | None:
        row = self._db.execute(
            "SELECT * FROM register_requests WHERE install_id=? AND status='pending'"
            " ORDER BY created_at LIMIT 1",
            (install_id,),
        ).fetchone()
        return _request(row) if row else None

    def add_request(
        self, install_id: str, secret_hash: str, caps: dict[str, Any], agent: str, ip: str
    ) -> RegisterRequestRecord:
        rid = new_id("rr-")
        self._db.execute(
            "INSERT INTO register_requests (id, install_id, secret_hash, capabilities,"
            " user_agent, source_ip, status, created_at) VALUES (?,?,?,?,?,?,?,?)",
            (rid, install_id, secret_hash, json.dumps(caps), agent, ip, "pending", now_iso()),
        )
        found = self.get_request(rid)
        assert found is not None
        return found

    def refresh_request(self, rid: str, secret_hash: str, caps: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE register_requests SET secret_hash=?, capabilities=? WHERE id=?",
            (secret_hash, json.dumps(caps), rid),
        )

    def get_request(self, rid: str) -> RegisterRequestRecord | None:
        row = self._db.execute("SELECT * FROM register_requests WHERE id=?", (rid,)).fetchone()
        return _request(row) if row else None

    def list_requests(self, status: str | None = None) -> list[RegisterRequestRecord]:
        sql = "SELECT * FROM register_requests"
        args: tuple[str, ...] = ()
        if status:
            sql, args = sql + " WHERE status=?", (status,)
        rows = self._db.execute(sql + " ORDER BY created_at", args).fetchall()
        return [_request(r) for r in rows]

    def approve_request(self, rid: str) -> str:
        """Create the worker for a pending request; returns its worker id."""
        req = self.get_request(rid)
        if req is None:
            raise KeyError(rid)
        if req.status is RequestStatus.APPROVED and req.worker_id:
            return req.worker_id
        if req.status is not RequestStatus.PENDING:
            raise ValueError(f"request {rid} is {req.status.value}")
        wid = new_id("w_", 6)
        now = now_iso()
        with self._transaction():
            self._db.execute(
                "INSERT INTO workers (id, install_id, capabilities, created_at) VALUES (?,?,?,?)",
                (wid, req.install_id, json.dumps(req.capabilities), now),
            )
            self._db.execute(
                "UPDATE register_requests SET status='approved', worker_id=?, decided_at=?"
                " WHERE id=?",
                (wid, now, rid),
            )
        return wid

    def reject_request(self, rid: str, reason: str) -> None:
        req = self.get_request(rid)
        if req is None:
            raise KeyError(rid)
        if req.status is not RequestStatus.PENDING:
            raise ValueError(f"request {rid} is {req.status.value}")
        self._db.execute(
            "UPDATE register_requests SET status='rejected', reason=?, decided_at=? WHERE id=?",
            (reason, now_iso(), rid),
        )

    # ---- workers and tokens -----------------------------------------------------

    def add_token(self, worker_id: str, token: str) -> None:
        self._db.execute(
            "INSERT INTO worker_tokens (token_hash, worker_id, created_at) VALUES (?,?,?)",
            (token_hash(token), worker_id, now_iso()),
        )

    def token_valid(self, worker_id: str, token: str) -> bool:
        # Lookup by the hash of the presented token: equality on a SHA-256 digest leaks
        # nothing useful about other tokens, so no constant-time compare is needed here.
        row = self._db.execute(
            "SELECT 1 FROM worker_tokens t JOIN workers w ON w.id = t.worker_id"
            " WHERE t.token_hash=? AND t.worker_id=? AND t.revoked_at IS NULL"
            " AND w.deleted_at IS NULL",
            (token_hash(token), worker_id),
        ).fetchone()
        return row is not None

    def revoke_tokens(self, worker_id: str) -> int:
        cur = self._db.execute(
            "UPDATE worker_tokens SET revoked_at=? WHERE worker_id=? AND revoked_at IS NULL",
            (now_iso(), worker_id),
        )
        return cur.rowcount

    def get_worker(self, wid: str) -> WorkerRecord | None:
        row = self._db.execute("SELECT * FROM workers WHERE id=?", (wid,)).fetchone()
        return _worker(row) if row else None

    def list_workers(self, include_deleted: bool = False) -> list[WorkerRecord]:
        where = "" if include_deleted else " WHERE deleted_at IS NULL"
        rows = self._db.execute(f"SELECT * FROM workers{where} ORDER BY created_at").fetchall()
        return [_worker(r) for r in rows]

    def delete_worker(self, wid: str) -> None:
        with self._transaction():
            self._db.execute("UPDATE workers SET deleted_at=? WHERE id=?", (now_iso(), wid))
            self.revoke_tokens(wid)

    def touch_worker(self, wid: str, caps: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE workers SET capabilities=?, last_seen_at=? WHERE id=?",
            (json.dumps(caps), now_iso(), wid),
        )

    # ---- jobs ---------------------------------------------------------------------

    def add_job(
        self,
        *,
        kind: str,
        model: str,
        task: dict[str, Any],
        model_source: dict[str, Any],
        vram_gb_estimate: float,
        game_id: str,
        asset_name: str,
    ) -> str:
        jid = new_id("job_")
        now = now_iso()
        cursor = self._db.execute(
            "INSERT INTO jobs (id, kind, model, task, model_source, vram_gb_estimate, game_id,"
            " asset_name, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                jid,
                kind,
                model,
                json.dumps(task),
                json.dumps(model_source),
                vram_gb_estimate,
                game_id,
                asset_name,
                JobStatus.QUEUED.value,
                now,
                now,
            ),
        )
        assert cursor.lastrowid is not None
        job = JobRecord(
            id=jid,
            kind=kind,
            model=model,
            task=task,
            model_source=model_source,
            vram_gb_estimate=vram_gb_estimate,
            game_id=game_id,
            asset_name=asset_name,
            status=JobStatus.QUEUED,
            attempts=0,
            worker_id=None,
            error=None,
            result=None,
            result_path=None,
            ext=None,
            mime=None,
            size=None,
            prompt=None,
            created_at=now,
            updated_at=now,
            finished_at=None,
        )
        self._cache_queued(cursor.lastrowid, job)
        return jid

    def _cache_queued(self, rowid: int, job: JobRecord) -> None:
        self._fresh[job.id] = (rowid, job)
        if len(self._fresh) > FRESH_CAP:
            del self._fresh[next(iter(self._fresh))]

    def get_job(self, jid: str) -> JobRecord | None:
        found = self._find(jid)
        return found[1] if found else None

    def _find(self, jid: str) -> tuple[int, JobRecord] | None:
        found = self._held.get(jid) or self._fresh.get(jid)
        if found is not None:
            return found
        row = self._db.execute("SELECT rowid AS _rowid, * FROM jobs WHERE id=?", (jid,)).fetchone()
        return (int(row["_rowid"]), _job(row)) if row else None

    def list_jobs(self, status: str | None = None, limit: int = 500) -> list[JobRecord]:
        """Jobs, newest first (of one status, if given)."""
        if status in HELD:
            newest = sorted(self._held.values(), key=lambda pair: pair[0], reverse=True)
            return [job for _, job in newest if job.status == status][:limit]
        sql = "SELECT * FROM jobs"
        args: tuple[str, ...] = ()
        if status:
            sql, args = sql + " WHERE status=?", (status,)
        # Held jobs' rows still say `queued`: fetch enough to drop or replace them.
        rows = self._db.execute(
            sql + " ORDER BY rowid DESC LIMIT ?", (*args, self._past_held(limit))
        ).fetchall()
        out: list[JobRecord] = []
        for row in rows:
            held = self._held.get(row["id"])
            if held is None:
                out.append(_job(row))
            elif not status:
                out.append(held[1])
        return out[:limit]

    def queued_jobs(self, after: int = 0, limit: int = -1) -> list[tuple[int, JobRecord]]:
        """Queued jobs in submission order as (rowid, job), from rowid `after` on."""
        rows = self._db.execute(
            "SELECT rowid AS _rowid, * FROM jobs WHERE status='queued' AND rowid>?"
            " ORDER BY rowid LIMIT ?",
            (after, self._past_held(limit)),
        ).fetchall()
        out = [(int(r["_rowid"]), _job(r)) for r in rows if r["id"] not in self._held]
        return out if limit < 0 else out[:limit]

    def queued_page(self, after: int = 0, limit: int = -1) -> list[QueuedJob]:
        """Like `queued_jobs`, only the columns matching needs (no JSON decoding)."""
        rows = self._db.execute(
            "SELECT rowid, id, kind, vram_gb_estimate FROM jobs WHERE status='queued'"
            " AND rowid>? ORDER BY rowid LIMIT ?",
            (after, self._past_held(limit)),
        ).fetchall()
        out = [QueuedJob(*row) for row in rows if row[1] not in self._held]
        return out if limit < 0 else out[:limit]

    def _past_held(self, limit: int) -> int:
        """A LIMIT that leaves `limit` rows once held jobs (rows: `queued`) are dropped."""
        return limit if limit < 0 else limit + len(self._held)

    def held_jobs(self, worker_id: str | None = None) -> list[JobRecord]:
        """Offered and running jobs (of one worker, if given), in submission order."""
        held = sorted(self._held.values(), key=lambda pair: pair[0])
        return [job for _, job in held if worker_id is None or job.worker_id == worker_id]

    def set_job(self, jid: str, status: JobStatus, **fields: Any) -> JobRecord:
        """Move a job along the transition table, setting the given columns too.

        `result_json` is given as the JSON value itself; the store encodes it.
        """
        found = self._find(jid)
        if found is None:
            raise KeyError(jid)
        rowid, job = found
        if status is not job.status and status not in JOB_TRANSITIONS[job.status]:
            raise TransitionError(f"job {jid}: {job.status.value} -> {status.value}")
        now = now_iso()
        changes: dict[str, Any] = {**fields, "status": status, "updated_at": now}
        if status in (JobStatus.DONE, JobStatus.FAILED):
            changes["finished_at"] = now
        updated = dataclasses.replace(
            job, **{_FIELD_OF_COLUMN.get(name, name): value for name, value in changes.items()}
        )
        if status in HELD:  # memory only, but for the accepting worker: see the docstring
            if status is JobStatus.RUNNING and job.status is not JobStatus.RUNNING:
                self._unsaved_holders[jid] = updated.worker_id
            self._fresh.pop(jid, None)
            self._held[jid] = (rowid, updated)
            return updated
        # Leaving (or never reaching) a held state: the row gets all of it, the worker
        # set while held included, in one commit.
        columns = {**changes, "status": status.value, "worker_id": updated.worker_id}
        if "result_json" in columns:
            columns["result_json"] = json.dumps(columns["result_json"])
        cols = ", ".join(f"{name}=?" for name in columns)
        self._db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*columns.values(), jid))
        self._held.pop(jid, None)
        self._unsaved_holders.pop(jid, None)  # this write carried the worker
        if status is JobStatus.QUEUED:
            self._cache_queued(rowid, updated)
        else:
            self._fresh.pop(jid, None)
        return updated

    def resume_interrupted(self) -> list[JobRecord]:
        """On start: jobs a worker was running when the studio stopped are held again for
        that worker (their rows say `queued` with its id); returns them."""
        rows = self._db.execute(
            "SELECT rowid AS _rowid, * FROM jobs WHERE status='queued' AND worker_id IS NOT NULL"
            " ORDER BY rowid"
        ).fetchall()
        resumed = []
        for row in rows:
            job = dataclasses.replace(_job(row), status=JobStatus.RUNNING)
            self._fresh.pop(job.id, None)
            self._held[job.id] = (int(row["_rowid"]), job)
            resumed.append(job)
        return resumed

    def requeue_interrupted(self) -> list[str]:
        """On start: jobs that were offered/running when the studio stopped go back."""
        held = [job.id for job in self.held_jobs()]
        with self._transaction():
            for jid in held:
                self.set_job(jid, JobStatus.QUEUED, worker_id=None)
        return held

    # ---- worker logs --------------------------------------------------------------

    def add_logs(self, worker_id: str, entries: Iterable[LogEntry]) -> None:
        rows = [(worker_id, e.ts, e.level, e.category, e.message, e.job_id) for e in entries]
        if not rows:
            return
        # One commit for the whole batch and its trim (row by row, a batch of a thousand
        # lines was a thousand commits).
        with self._transaction():
            self._db.executemany(
                "INSERT INTO worker_logs (worker_id, ts, level, category, message, job_id)"
                " VALUES (?,?,?,?,?,?)",
                rows,
            )
            self._db.execute(
                "DELETE FROM worker_logs WHERE worker_id=? AND id <= (SELECT id FROM worker_logs"
                " WHERE worker_id=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (worker_id, worker_id, self._log_cap),
            )

    def worker_logs(self, worker_id: str, limit: int = 1000) -> list[LogEntry]:
        rows = self._db.execute(
            "SELECT * FROM (SELECT * FROM worker_logs WHERE worker_id=? ORDER BY id DESC"
            " LIMIT ?) ORDER BY id",
            (worker_id, limit),
        ).fetchall()
        return [
            LogEntry(
                ts=r["ts"],
                level=r["level"],
                category=r["category"],
                message=r["message"],
                job_id=r["job_id"],
            )
            for r in rows
        ]


def _request(row: sqlite3.Row) -> RegisterRequestRecord:
    return RegisterRequestRecord(
        id=row["id"],
        install_id=row["install_id"],
        secret_hash=row["secret_hash"],
        capabilities=json.loads(row["capabilities"]),
        user_agent=row["user_agent"],
        source_ip=row["source_ip"],
        status=RequestStatus(row["status"]),
        reason=row["reason"],
        worker_id=row["worker_id"],
        created_at=row["created_at"],
        decided_at=row["decided_at"],
    )


def _worker(row: sqlite3.Row) -> WorkerRecord:
    return WorkerRecord(
        id=row["id"],
        install_id=row["install_id"],
        capabilities=json.loads(row["capabilities"]),
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        deleted_at=row["deleted_at"],
    )


def _job(row: sqlite3.Row) -> JobRecord:
    raw_result = row["result_json"]
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        model=row["model"],
        task=json.loads(row["task"]),
        model_source=json.loads(row["model_source"]),
        vram_gb_estimate=row["vram_gb_estimate"],
        game_id=row["game_id"],
        asset_name=row["asset_name"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        worker_id=row["worker_id"],
        error=row["error"],
        result=json.loads(raw_result) if raw_result is not None else None,
        result_path=row["result_path"],
        ext=row["ext"],
        mime=row["mime"],
        size=row["size"],
        prompt=row["prompt"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )
