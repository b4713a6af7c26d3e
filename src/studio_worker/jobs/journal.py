"""Crash-safe job journal: what the studio is owed for each accepted job survives a crash.

One small JSON file per job in `<config dir>/jobs/`, written to a temp file and renamed,
so a reader sees an entry whole or not at all:

| state       | written when                          | after a crash, on the next `welcome`      |
| ----------- | ------------------------------------- | ----------------------------------------- |
| `running`   | the `accept` has left                 | `fail` retryable "worker restarted …"     |
| `held`      | the outcome frame is in the outbox    | that frame (`completeJson` or `fail`)     |
| `uploading` | a binary result's upload has started  | the upload again, from the kept bytes     |

A binary result up to `MAX_HELD_BYTES` is kept next to its entry (`<name>.bin`) while
it uploads; a second upload is safe where a second frame is not: a studio that already
took it, or took the job back, answers 409 (`NotHeld`) and nothing else is sent.
Without the bytes (too big, or the disk refused them) nothing is sent for the job.

An entry is removed the moment its frame is handed to the socket (`sending`), not when
the studio acks it: a frame the studio already took and then sees again is a protocol
violation (§3.5, 4002) that ends the worker, while a lost frame only costs the studio its
30 s hold timer (the job is requeued, nothing lost). For the same reason an entry is only
replayed while the studio can still hold the job: its file's mtime is the last moment the
studio was heard from (stamped on every write and touched on every frame received, at
most once a second), and an entry older than `replay_window_s` is set aside unsent.
Corrupt entries are renamed `*.corrupt` (a few are kept for a person to read) and never
stop the worker.

No fsync: the journal is for a crash of the worker process (killed, out of memory, a
native abort), which the service restarts within seconds; the written pages are in the
kernel's cache and survive that. An OS crash or power loss takes longer to recover from
than the replay window, so its entries would be set aside unsent whatever was flushed;
fsync would buy nothing and cost two disk flushes per job on the event loop (measured:
they were most of the worker's time per job in bench/pipeline.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from studio_worker.domain.results import BinaryResult
from studio_worker.domain.wire import WireModel
from studio_worker.protocol.frames import CompleteJson, Fail, FrameError, decode_worker_frame

log = logging.getLogger(__name__)

# The studio holds a job of a vanished worker for 30 s after its last heartbeat
# (protocol §3.6); a replay must land well inside that. The same bound guards frames
# waiting in the outbox across a reconnect (`session/outbox.py`).
REPLAY_WINDOW_S = 25.0
MAX_ENTRIES = 16  # the worker runs one job at a time: a handful is plenty
MAX_ENTRY_BYTES = 1024 * 1024  # a bigger result is journaled as `running` only
MAX_HELD_BYTES = 32 * 1024 * 1024  # a bigger binary result is not kept for a re-upload
KEEP_CORRUPT = 4
TOUCH_EVERY_S = 1.0
RESTARTED_ERROR = "worker restarted while running the job"
VERSION = 1


@dataclass(frozen=True, slots=True)
class HeldUpload:
    """A binary result a past run was uploading when it stopped."""

    job_id: str
    prompt: str
    result: BinaryResult


class EntryState(StrEnum):
    RUNNING = "running"
    HELD = "held"
    UPLOADING = "uploading"


class JobJournal:
    """The worker's promise ledger; every method is best effort and never raises."""

    def __init__(
        self,
        folder: Path,
        *,
        worker_id: Callable[[], str | None] = lambda: None,
        replay_window_s: float = REPLAY_WINDOW_S,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self._worker_id = worker_id
        self._window = replay_window_s
        self._max_entries = max_entries
        self._clock = clock
        self._mine: set[str] = set()  # job ids journaled by this process
        self._bins: set[str] = set()  # ... of those, the ones with result bytes kept beside
        self._recovered = False
        self._touched = 0.0
        self._contact: float | None = None  # wall time the studio was last heard from
        self._uploads: list[HeldUpload] = []  # found by `recover`, taken by the dispatcher
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            log.warning("job journal unavailable at %s: %s", folder, exc)

    # ---- writing (dispatcher and outbox) -------------------------------------------

    def running(self, job_id: str) -> None:
        self._write(job_id, EntryState.RUNNING, None)

    def held(self, frame: CompleteJson | Fail) -> None:
        wire = frame.to_wire()
        if len(json.dumps(wire)) > MAX_ENTRY_BYTES:
            self._write(frame.job_id, EntryState.RUNNING, None)  # too big to keep
        else:
            self._write(frame.job_id, EntryState.HELD, wire)

    def uploading(self, job_id: str, prompt: str, result: BinaryResult) -> None:
        kept: dict[str, Any] = {}
        if len(result.data) <= MAX_HELD_BYTES and self._keep_bytes(job_id, result.data):
            kept = {"prompt": prompt, "ext": result.ext}
        self._write(job_id, EntryState.UPLOADING, None, kept)

    def tracks(self, job_id: str) -> bool:
        """Whether this process has an entry for the job (outcomes of untracked jobs are
        journaled only if the outbox cannot send them: `unsent`)."""
        return job_id in self._mine

    def done(self, job_id: str) -> None:
        """The studio has (or is being handed) this job's outcome: forget the job."""
        if job_id not in self._mine:
            return  # nothing on disk for it (every entry this process made is in `_mine`)
        self._mine.discard(job_id)
        try:
            self._path(job_id).unlink(missing_ok=True)
            if job_id in self._bins:
                self._bins.discard(job_id)
                self._path(job_id).with_suffix(".bin").unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not clear job %s from the journal: %s", job_id, exc)

    def take_uploads(self) -> list[HeldUpload]:
        """The uploads `recover` found; the dispatcher makes them again."""
        uploads, self._uploads = self._uploads, []
        return uploads

    # ---- the outbox's ledger port ----------------------------------------------------

    def sending(self, frame: WireModel) -> None:
        if isinstance(frame, CompleteJson | Fail):
            self.done(frame.job_id)

    def unsent(self, frame: WireModel) -> None:
        if isinstance(frame, CompleteJson | Fail):
            self.held(frame)

    def alive(self) -> None:
        """The studio was just heard from: stamp this process's entries (≤ once a second)."""
        now = self._clock()
        self._contact = now
        if now - self._touched < TOUCH_EVERY_S:
            return
        self._touched = now
        for job_id in list(self._mine):
            with contextlib.suppress(OSError):
                os.utime(self._path(job_id), (now, now))

    def recover(self) -> list[WireModel]:
        """Once per process, at the first `welcome`: frames owed for jobs of a past run."""
        if self._recovered:
            return []
        self._recovered = True
        frames: list[WireModel] = []
        mine = {_name(job_id) for job_id in self._mine}
        for path in sorted(self._entries(), key=_mtime):
            if path.stem in mine:
                continue
            frame = self._recover_one(path)
            if frame is not None:
                frames.append(frame)
        return frames

    # ---- internals --------------------------------------------------------------------

    def _recover_one(self, path: Path) -> WireModel | None:
        try:
            age = self._clock() - path.stat().st_mtime
            entry = _read(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._set_aside(path, str(exc))
            return None
        job_id, state = entry["jobId"], entry["state"]
        if entry.get("workerId") != self._worker_id():
            # Journaled under another registration: that worker's jobs are not ours to
            # report (the studio would call it a protocol violation).
            log.warning(
                "job %s was journaled by another registration of this worker; not reported",
                job_id,
                extra={"job_id": job_id, "op": "journal"},
            )
            _forget(path)
            return None
        if age > self._window:
            log.warning(
                "job %s was %s when the worker last stopped, %.0fs ago: the studio has "
                "taken it back by now, so nothing is sent for it",
                job_id,
                state,
                age,
                extra={"job_id": job_id, "op": "journal"},
            )
            _forget(path)
            return None
        if state == EntryState.UPLOADING:
            self._recover_upload(path, entry)
            return None
        frame: CompleteJson | Fail
        if state == EntryState.HELD:
            try:
                decoded = decode_worker_frame(json.dumps(entry["frame"]))
            except FrameError as exc:
                self._set_aside(path, exc.reason)
                return None
            if not isinstance(decoded, CompleteJson | Fail) or decoded.job_id != job_id:
                self._set_aside(path, "the held frame is not this job's outcome")
                return None
            frame = decoded
        else:
            frame = Fail(job_id=job_id, error=RESTARTED_ERROR, retryable=True)
        log.info(
            "reporting job %s from before the restart: %s",
            job_id,
            frame.type,
            extra={"job_id": job_id, "op": "journal"},
        )
        self._mine.add(job_id)  # cleared by `sending` like any other outcome
        return frame

    def _recover_upload(self, path: Path, entry: dict[str, Any]) -> None:
        job_id = entry["jobId"]
        prompt, ext = entry.get("prompt"), entry.get("ext")
        try:
            data = path.with_suffix(".bin").read_bytes()
        except OSError:
            data = None
        if data is None or not isinstance(prompt, str) or not isinstance(ext, str):
            # The upload may have landed; a `fail` for a job the studio no longer holds
            # would be a protocol violation. The studio's hold timer decides.
            log.warning(
                "job %s was uploading its result when the worker stopped and the bytes "
                "were not kept; the studio decides whether it arrived",
                job_id,
                extra={"job_id": job_id, "op": "journal"},
            )
            _forget(path)
            return
        log.info(
            "uploading job %s again, from before the restart",
            job_id,
            extra={"job_id": job_id, "op": "journal"},
        )
        self._mine.add(job_id)
        self._bins.add(job_id)
        self._uploads.append(HeldUpload(job_id, prompt, BinaryResult(data, ext)))

    def _keep_bytes(self, job_id: str, data: bytes) -> bool:
        path = self._path(job_id).with_suffix(".bin")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            log.warning("could not keep the result of job %s: %s", job_id, exc)
            return False
        self._bins.add(job_id)
        return True

    def _write(
        self,
        job_id: str,
        state: EntryState,
        frame: dict[str, Any] | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        entry: dict[str, Any] = {"v": VERSION, "jobId": job_id, "state": state.value}
        entry.update(extra or {})
        worker_id = self._worker_id()
        if worker_id is not None:
            entry["workerId"] = worker_id
        if frame is not None:
            entry["frame"] = frame
        path = self._path(job_id)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as handle:
                handle.write(json.dumps(entry, separators=(",", ":")).encode("utf-8"))
            # The stamp is the last word from the studio, not this write: an outcome made
            # during an outage must not look fresh to the next process.
            stamp = self._contact if self._contact is not None else self._clock()
            os.utime(tmp, (stamp, stamp))
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            log.warning(
                "could not journal job %s (%s): %s",
                job_id,
                state.value,
                exc,
                extra={"job_id": job_id, "op": "journal"},
            )
            return
        self._mine.add(job_id)
        self._bound()

    def _bound(self) -> None:
        # After the first welcome's recovery the folder holds only this process's entries
        # (older ones were replayed or set aside): no need to list it on every write.
        if self._recovered and len(self._mine) <= self._max_entries:
            return
        entries = self._entries()
        if len(entries) <= self._max_entries:
            return
        entries.sort(key=_mtime)
        for path in entries[: len(entries) - self._max_entries]:
            log.warning("job journal over %d entries: dropping %s", self._max_entries, path.name)
            _forget(path)

    def _entries(self) -> list[Path]:
        try:
            return [p for p in self.folder.glob("*.json") if p.is_file()]
        except OSError:
            return []

    def _set_aside(self, path: Path, why: str) -> None:
        log.warning("job journal entry %s is unreadable (%s); set aside", path.name, why)
        with contextlib.suppress(OSError):
            path.replace(path.with_suffix(".corrupt"))
        _unlink(path.with_suffix(".bin"))
        corrupt = sorted(self.folder.glob("*.corrupt"), key=_mtime)
        for old in corrupt[: max(0, len(corrupt) - KEEP_CORRUPT)]:
            _unlink(old)

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{_name(job_id)}.json"


def _name(job_id: str) -> str:
    """Job ids come from the studio: never used as a path, only hashed."""
    return hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:32]


def _read(path: Path) -> dict[str, Any]:
    if path.stat().st_size > 2 * MAX_ENTRY_BYTES:
        raise ValueError("entry too large")
    data = json.loads(path.read_bytes().decode("utf-8"))
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ValueError("not a journal entry")
    job_id, state = data.get("jobId"), data.get("state")
    if not isinstance(job_id, str) or not job_id or state not in set(EntryState):
        raise ValueError("entry has no job id or state")
    if _name(job_id) != path.stem:
        raise ValueError("entry does not match its file name")
    if state == EntryState.HELD and not isinstance(data.get("frame"), dict):
        raise ValueError("held entry without its frame")
    return data


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _forget(path: Path) -> None:
    """An entry and the result bytes kept beside it."""
    _unlink(path)
    _unlink(path.with_suffix(".bin"))


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
