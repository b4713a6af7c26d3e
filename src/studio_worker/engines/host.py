"""The engine host: a real engine runs in a supervised child process.

A native engine can die in ways Python cannot catch (a segfault in llama.cpp, an abort on a
bad GGUF, the OS killing it for memory). In the child, such a death costs the one job in
flight: the parent sees the process go, fails that job with `retryable: true` and a clear
reason, and starts a fresh child. The WebSocket session, in the parent, never notices.

Jobs and progress cross a small, typed message channel (a `multiprocessing` pipe carrying
the frozen dataclasses of `host_messages.py`). The child keeps its engine object, and so
the engine's loaded model, between jobs: a second job on the same model does not reload
it. Every answer to a job or a `Preload` carries what the engine holds loaded then
(`EngineHost.resident`); `EngineHost.unload` stops the child, which frees all of its
memory.

`HostedEngine` is what the registry sees: it satisfies the `Engine` port with the engine's
own name and advertised models (computed in the parent from a cheap instance that never
loads anything), and forwards `run` to the child.

The child's side is `host_child.py`; this module is the parent's: the process handle
(`EngineHost`) and the port (`HostedEngine`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobError, JobResult
from studio_worker.domain.tasks import JobOfferClaim, ModelSource
from studio_worker.engines.base import Progress, no_progress
from studio_worker.engines.host_child import child_main
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
    Stop,
)

log = logging.getLogger(__name__)

POLL_S = 0.1
CANCEL_GRACE_S = 10.0
STOP_GRACE_S = 5.0


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
