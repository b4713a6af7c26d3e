"""The engine host: a real engine runs in a supervised child process.

A native engine can die in ways Python cannot catch (a segfault in llama.cpp, an abort on a
bad GGUF, the OS killing it for memory). In the child, such a death costs the one job in
flight: the parent sees the process go, fails that job with `retryable: true` and a clear
reason, and starts a fresh child. The WebSocket session, in the parent, never notices.

Jobs and progress cross a small, typed message channel (a `multiprocessing` pipe carrying
the frozen dataclasses below). The child keeps its engine object, and so the engine's
loaded model, between jobs: a second job on the same model does not reload it. Every answer
to a job or a `Preload` carries what the engine holds loaded then (`EngineHost.resident`);
`EngineHost.unload` stops the child, which frees all of its memory.

`HostedEngine` is what the registry sees: it satisfies the `Engine` port with the engine's
own name and advertised models (computed in the parent from a cheap instance that never
loads anything), and forwards `run` to the child.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobError, JobResult
from studio_worker.domain.tasks import JobOfferClaim, ModelSource
from studio_worker.engines.base import Engine, Progress, no_progress

log = logging.getLogger(__name__)

POLL_S = 0.1
CANCEL_GRACE_S = 10.0
STOP_GRACE_S = 5.0
Connection = multiprocessing.connection.Connection


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """How the child builds its engine: `module.qualname(**kwargs)` (kwargs picklable)."""

    module: str
    qualname: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Engine:
        factory = getattr(importlib.import_module(self.module), self.qualname)
        engine: Engine = factory(**self.kwargs)
        return engine


# ---- messages: parent -> child ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunJob:
    seq: int
    claim: JobOfferClaim
    model_paths: Mapping[str, Path]


@dataclass(frozen=True, slots=True)
class Preload:
    """Load `source`'s model as a job of it would, without running one."""

    seq: int
    source: ModelSource
    model_paths: Mapping[str, Path]


@dataclass(frozen=True, slots=True)
class CancelJob:
    seq: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


# ---- messages: child -> parent ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    pid: int


@dataclass(frozen=True, slots=True)
class Broken:
    """The child could not build its engine (import error, missing library)."""

    reason: str


@dataclass(frozen=True, slots=True)
class JobProgress:
    seq: int
    fraction: float
    note: str


@dataclass(frozen=True, slots=True)
class LogLine:
    level: int
    logger: str
    message: str
    job_id: str | None


@dataclass(frozen=True, slots=True)
class JobDone:
    seq: int
    result: JobResult
    loads: int | None  # the engine's model-load counter, when it keeps one
    resident: tuple[str, ...] = ()  # the engine's `resident()` after the job


@dataclass(frozen=True, slots=True)
class JobFailed:
    seq: int
    message: str
    retryable: bool
    crashed: bool  # an unexpected exception rather than a classified JobError
    loads: int | None
    resident: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Preloaded:
    """The answer to a `Preload` that worked (one that did not is a `JobFailed`)."""

    seq: int
    loads: int | None
    resident: tuple[str, ...]


ToChild = RunJob | Preload | CancelJob | Stop
FromChild = Started | Broken | JobProgress | LogLine | JobDone | JobFailed | Preloaded


# ---- the child ----------------------------------------------------------------------


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


# ---- the parent ---------------------------------------------------------------------


def describe_exit(exitcode: int | None) -> str:
    """A person-readable reason for a child's end (`-9` → killed by SIGKILL …)."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {
            "SIGKILL": " (out of memory, or killed by the OS or a person)",
            "SIGSEGV": " (a crash in native code)",
            "SIGABRT": " (the native library aborted)",
            "SIGBUS": " (a crash in native code)",
        }.get(name, "")
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode}"


class EngineHost:
    """Owns one engine child: starts it, talks to it, restarts it after a death."""

    def __init__(
        self,
        spec: EngineSpec,
        name: str,
        *,
        start_method: str = "spawn",
        cancel_grace_s: float = CANCEL_GRACE_S,
    ) -> None:
        self._spec = spec
        self._name = name
        self._ctx = multiprocessing.get_context(start_method)
        self._cancel_grace_s = cancel_grace_s
        self._lock = threading.Lock()  # one job at a time through this host
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._seq = 0
        self._resident: tuple[str, ...] = ()
        self.starts = 0
        self.loads: int | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (None: no engine process, nothing loaded)."""
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def busy(self) -> bool:
        """A job or a preload is going through this host now."""
        return self._lock.locked()

    @property
    def resident(self) -> tuple[str, ...]:
        """What the engine reported loaded after its last job or preload (absolute file
        paths); empty once the child is gone, since its memory went with it."""
        return self._resident if self.running else ()

    def start(self) -> None:
        """Start the child if it is not running (cheap when it is)."""
        if self._proc is not None and self._proc.is_alive():
            return
        self._reap()
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(  # type: ignore[attr-defined]
            target=child_main,
            args=(child, self._spec),
            name=f"engine-{self._name}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        log.info("engine %s: child process %s started", self._name, proc.pid)

    def unload(self) -> int | None:
        """Stop the child between jobs: everything it loaded is freed; the next job starts
        a fresh one. The pid it had, or None when none ran."""
        with self._lock:
            pid = self.pid
            self.stop()
        if pid is not None:
            log.info("engine %s: child process %s stopped (unload)", self._name, pid)
        return pid

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            conn.send(Stop())
        proc.join(grace_s)
        if proc.is_alive():
            proc.kill()
            proc.join(grace_s)
        self._reap()

    def _reap(self) -> None:
        self._resident = ()
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.join(0)
            if not self._proc.is_alive():
                self._proc.close()
        self._proc, self._conn = None, None

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        with self._lock:
            self.start()
            assert self._proc is not None and self._conn is not None
            self._seq += 1
            seq = self._seq
            try:
                self._conn.send(RunJob(seq, claim, dict(model_paths)))
            except (OSError, ValueError) as exc:
                raise self._died(claim.job_id, f"could not reach it ({exc})") from None
            done = self._await(seq, claim.job_id, progress, cancel)
            assert isinstance(done, JobDone)
            return done.result

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> tuple[str, ...]:
        """Load `source`'s model in the child (starting it) without running a job; what it
        holds loaded then. `JobError` with the engine's reason when it cannot."""
        with self._lock:
            self.start()
            assert self._conn is not None
            self._seq += 1
            seq = self._seq
            try:
                self._conn.send(Preload(seq, source, dict(model_paths)))
            except (OSError, ValueError) as exc:
                raise self._died(None, f"could not reach it ({exc})") from None
            self._await(seq, None, no_progress, threading.Event())
            return self._resident

    def _await(
        self, seq: int, job_id: str | None, progress: Progress, cancel: threading.Event
    ) -> JobDone | Preloaded:
        """The final answer to request `seq`: a job (`job_id`) or a preload (None)."""
        assert self._proc is not None and self._conn is not None
        conn, proc = self._conn, self._proc
        cancel_sent_at: float | None = None
        while True:
            if cancel.is_set() and cancel_sent_at is None:
                cancel_sent_at = time.monotonic()
                with contextlib.suppress(OSError, ValueError):
                    conn.send(CancelJob(seq))
            if cancel_sent_at is not None and time.monotonic() - cancel_sent_at > (
                self._cancel_grace_s
            ):
                log.warning("engine %s ignored a cancel: stopping its process", self._name)
                self.stop(grace_s=1.0)
                raise JobError("cancelled (the engine did not stop in time)", retryable=True)
            ready = multiprocessing.connection.wait([conn, proc.sentinel], POLL_S)
            if conn in ready:
                try:
                    message: FromChild = conn.recv()
                except (EOFError, OSError):
                    proc.join(1.0)
                    raise self._died(job_id, describe_exit(proc.exitcode)) from None
                outcome = self._handle(seq, message, progress)
                if outcome is not None:
                    return outcome
            elif proc.sentinel in ready:
                proc.join(1.0)
                raise self._died(job_id, describe_exit(proc.exitcode))

    def _handle(
        self, seq: int, message: FromChild, progress: Progress
    ) -> JobDone | Preloaded | None:
        match message:
            case JobProgress(seq=s, fraction=fraction, note=note) if s == seq:
                progress(fraction, note)
            case LogLine(level=level, logger=name, message=text, job_id=job_id):
                extra = {"job_id": job_id} if job_id else None
                logging.getLogger(name).log(level, "%s", text, extra=extra)
            case JobDone(seq=s) | Preloaded(seq=s) if s == seq:
                self.loads, self._resident = message.loads, message.resident
                return message
            case JobFailed(seq=s, message=text, retryable=retryable) if s == seq:
                self.loads, self._resident = message.loads, message.resident
                raise JobError(text, retryable=retryable)
            case Broken(reason=reason):
                self.stop(grace_s=1.0)
                raise JobError(f"engine `{self._name}` could not start: {reason}", retryable=True)
            case Started(pid=pid):
                log.debug("engine %s: child %s ready", self._name, pid)
            case _:
                pass  # a stale message from an earlier job
        return None

    def _died(self, job_id: str | None, how: str) -> JobError:
        log.error(
            "engine %s: child process %s during %s; starting a fresh one",
            self._name,
            how,
            f"job {job_id}" if job_id else "a preload",
            extra={"job_id": job_id} if job_id else None,
        )
        self._reap()
        self.loads = None
        try:
            self.start()  # ready for the next job; this one is lost
        except Exception as exc:
            log.error("engine %s: restart failed: %s", self._name, exc)
        doing = "running this job" if job_id else "loading the model"
        return JobError(
            f"engine `{self._name}` process {how} while {doing}; "
            "the engine was restarted, another attempt may succeed",
            retryable=True,
        )


class HostedEngine:
    """The `Engine` port for an engine that runs in an `EngineHost` child."""

    def __init__(self, spec: EngineSpec, *, start_method: str = "spawn") -> None:
        self._local = spec.build()  # cheap: engines import their libraries only to load
        self.host = EngineHost(spec, self._local.name, start_method=start_method)

    @property
    def name(self) -> str:
        return self._local.name

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return self._local.models_per_kind()

    def resident(self) -> list[str]:
        return list(self.host.resident)

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        self.host.preload(source, model_paths)

    def unload(self) -> None:
        self.host.unload()

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        return self.host.run(claim, model_paths, progress, cancel)

    def close(self) -> None:
        self.host.stop()
