"""The engine host's child: the process that builds the engine and runs its jobs.

One reader thread takes every message off the pipe (a cancel reaches the job it names
while the main thread runs it); the main thread runs jobs and preloads one at a time and
answers each with what the engine holds loaded then. The child's log records go to the
parent as `LogLine`s.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback

from studio_worker.domain.results import JobError
from studio_worker.engines.base import Engine
from studio_worker.engines.host_messages import (
    Broken,
    CancelJob,
    Connection,
    EngineSpec,
    FromChild,
    JobDone,
    JobFailed,
    JobProgress,
    LogLine,
    Preload,
    Preloaded,
    RunJob,
    Started,
    ToChild,
)


class _PipeLogHandler(logging.Handler):
    """Sends the child's log records to the parent, which logs them as its own."""

    def __init__(self, send: _Sender) -> None:
        super().__init__(logging.INFO)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            job_id = getattr(record, "job_id", None)
            self._send(LogLine(record.levelno, record.name, record.getMessage(), job_id))
        except Exception:  # a log line must never break a job
            self.handleError(record)


class _Sender:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __call__(self, message: FromChild) -> None:
        with self._lock:
            self._conn.send(message)


def child_main(conn: Connection, spec: EngineSpec) -> None:
    """Entry point of the engine process (must stay importable for `spawn`)."""
    send = _Sender(conn)
    root = logging.getLogger()
    root.handlers[:] = [_PipeLogHandler(send)]
    root.setLevel(logging.INFO)
    try:
        engine = spec.build()
    except BaseException as exc:
        send(Broken(f"{type(exc).__name__}: {exc}"))
        return
    send(Started(os.getpid()))

    jobs: list[RunJob | Preload] = []
    arrived = threading.Condition()
    cancels: dict[int, threading.Event] = {}
    stopping = threading.Event()

    def reader() -> None:
        # The only reader of the pipe. A closed pipe means the parent is gone: so are we.
        while True:
            try:
                message: ToChild = conn.recv()
            except (EOFError, OSError):
                os._exit(0)
            with arrived:
                if isinstance(message, RunJob | Preload):
                    cancels[message.seq] = threading.Event()
                    jobs.append(message)
                elif isinstance(message, CancelJob):
                    if message.seq in cancels:
                        cancels[message.seq].set()
                else:
                    stopping.set()
                arrived.notify()
            if stopping.is_set():
                return

    threading.Thread(target=reader, name="engine-host-reader", daemon=True).start()
    while True:
        with arrived:
            while not jobs and not stopping.is_set():
                arrived.wait()
            if stopping.is_set():
                break
            job = jobs.pop(0)
            cancel = cancels[job.seq]
        if isinstance(job, Preload):
            _preload(engine, job, send)
        else:
            _run_one(engine, job, cancel, send)
        with arrived:
            cancels.pop(job.seq, None)
    unload = getattr(engine, "unload", None)
    if callable(unload):
        unload()


def _run_one(engine: Engine, job: RunJob, cancel: threading.Event, send: _Sender) -> None:
    def progress(fraction: float, note: str) -> None:
        send(JobProgress(job.seq, fraction, note))

    try:
        result = engine.run(job.claim, job.model_paths, progress, cancel)
    except Exception as exc:
        send(_failed(engine, job.seq, exc, job.claim.job_id))
    else:
        send(JobDone(job.seq, result, _loads(engine), _resident(engine)))


def _preload(engine: Engine, job: Preload, send: _Sender) -> None:
    try:
        engine.preload(job.source, job.model_paths)
    except Exception as exc:
        send(_failed(engine, job.seq, exc, None))
    else:
        send(Preloaded(job.seq, _loads(engine), _resident(engine)))


def _failed(engine: Engine, seq: int, exc: Exception, job_id: str | None) -> JobFailed:
    if isinstance(exc, JobError):
        return JobFailed(seq, exc.message, exc.retryable, False, _loads(engine), _resident(engine))
    logging.getLogger(__name__).error(
        "engine raised %s", traceback.format_exc(), extra={"job_id": job_id}
    )
    message = f"{type(exc).__name__}: {exc}"
    return JobFailed(seq, message, True, True, _loads(engine), _resident(engine))


def _loads(engine: Engine) -> int | None:
    loads = getattr(engine, "loads", None)
    return loads if isinstance(loads, int) else None


def _resident(engine: Engine) -> tuple[str, ...]:
    resident = getattr(engine, "resident", None)  # an engine from before the port had it
    if not callable(resident):
        return ()
    try:
        return tuple(str(path) for path in resident())
    except Exception:  # residency is a report: it must never fail a job
        logging.getLogger(__name__).exception("engine residency report failed")
        return ()
