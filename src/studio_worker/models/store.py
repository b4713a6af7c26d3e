"""The model cache: find a ModelSource's files on disk, or download them (behaviour §9).

Layout: `<root>/<engine>/<model>/<filename>`, engine and model sanitised into one path
segment each. Files already on disk are trusted (no re-hash). Before downloading, two
older layouts are looked at and reused in place: the reference worker's per-model dir
`<root>/<model>/<filename>` and the legacy flat `<root>/<filename>`.

A download streams into `<filename>.part` next to the destination, hashing as it goes,
then fsyncs and renames over the destination, so a file under its real name is always
whole. A partial left by a cut connection, a stall or a restart is resumed with
`Range: bytes=<n>-`. One download per destination runs at a time in this store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import math
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import httpx

from studio_worker import user_agent as default_user_agent
from studio_worker.domain.tasks import ModelFile, ModelSource
from studio_worker.models.errors import ModelError, ModelNotCached
from studio_worker.models.paths import check_filename, check_url, display_url, sanitise_id

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".part"
DISK_HEADROOM = 1.1
PROGRESS_INTERVAL_S = 0.25
CHUNK_BYTES = 1 << 16
MAX_REDIRECTS = 10
MAX_START_OVERS = 2  # 416 / wrong Content-Range: drop the partial and go again, this often
RETRY_STATUSES = frozenset({408, 429})
TERMINAL_STATUSES = frozenset({404, 410})  # the file is gone: a re-offer fails the same
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
# Top-level folders under models_root that hold other things than engine dirs (§9.1).
RESERVED_DIRS = frozenset({"bin", "onnxruntime", "llm", "stt"})


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    """Where one file's download stands. `finished` is sent once, when it stops (done or
    given up); `done` counts bytes on disk, the resumed prefix included."""

    model: str
    filename: str
    done: int
    total: int | None
    rate_bps: float
    eta_s: float | None
    finished: bool


ProgressSink = Callable[[DownloadProgress], None]


@dataclass(frozen=True, slots=True)
class CachedFile:
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One `<engine>/<model>` folder: complete files, and partial downloads by target name."""

    engine: str
    model: str
    path: Path
    files: tuple[CachedFile, ...]
    partials: tuple[CachedFile, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files) + sum(p.size for p in self.partials)


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (the models dir may not exist yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def disk_free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds (or will hold) `path`."""
    return shutil.disk_usage(nearest_existing(path)).free


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def _write(fh: BinaryIO, data: bytes) -> None:
    """One chunk to the partial file (a seam: tests make it fail like a full disk)."""
    fh.write(data)


def _flush_and_sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _sync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); where a directory cannot be opened, skip it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _hash_file(path: Path, hasher: hashlib._Hash) -> int:
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            hasher.update(block)
            size += len(block)
    return size


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _ContentRange:
    start: int
    end: int
    total: int | None


def _content_range(value: str | None) -> _ContentRange | None:
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        return None
    start, end, total = match.groups()
    return _ContentRange(int(start), int(end), None if total == "*" else int(total))


class _Transient(Exception):
    """This attempt failed; the partial stays and the next attempt resumes it."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class _StartOver(Exception):
    """The partial does not fit the remote file: it was deleted; go again from byte 0."""


@dataclass
class _Fetch:
    """One file's download across its attempts."""

    model: str
    file: ModelFile
    dest: Path
    sinks: tuple[ProgressSink, ...]
    written: int = 0  # bytes written by the current attempt
    done: int = 0
    total: int | None = None
    rate_bps: float = 0.0
    ok: bool = False
    last_emit: float = field(default=-math.inf)

    @property
    def part(self) -> Path:
        return partial_path(self.dest)

    @property
    def url(self) -> str:
        return display_url(self.file.url)

    def log_extra(self, **more: object) -> dict[str, object]:
        return {"op": "download", "model": self.model, "file": self.file.filename, **more}


@dataclass
class _Gate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ModelStore:
    """Model files under `root`, downloaded on demand through `http`."""

    def __init__(
        self,
        root: Path,
        *,
        http: httpx.AsyncClient,
        user_agent: str = default_user_agent(),
        stall_timeout_s: float = 30.0,
        max_attempts: int = 5,
        backoff_base_s: float = 1.0,
        on_progress: ProgressSink | None = None,
        free_space: Callable[[Path], int] = disk_free_bytes,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.root = Path(root).expanduser().absolute()
        self._http = http
        self._user_agent = user_agent
        self._stall_s = stall_timeout_s
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._on_progress = on_progress
        self._free_space = free_space
        self._gates: dict[Path, _Gate] = {}

    # -- layout ------------------------------------------------------------------------

    def model_dir(self, engine: str, model: str) -> Path:
        return self.root / sanitise_id(engine) / sanitise_id(model)

    def _existing(self, engine: str, model: str, filename: str) -> Path | None:
        """Where `filename` already is: our layout, then the older ones (never re-fetched)."""
        candidates = (
            self.model_dir(engine, model) / filename,
            self.root / sanitise_id(model) / filename,  # the reference worker's per-model dir
            self.root / filename,  # legacy flat layout / operator-placed
        )
        for index, candidate in enumerate(candidates):
            if candidate.is_file():
                if index:
                    log.info(
                        "reusing %s in place",
                        candidate,
                        extra={"op": "download", "model": model, "file": filename},
                    )
                return candidate
        return None

    # -- ensure ------------------------------------------------------------------------

    async def ensure(
        self,
        model: str,
        source: ModelSource,
        progress: ProgressSink | None = None,
    ) -> dict[str, Path]:
        """Every file of `source` on disk: `{filename: absolute path}`, downloading what is
        missing. Raises `ModelError` before any request if a name or URL is unsafe."""
        for file in source.files:
            check_filename(file.filename)
            check_url(file.url)
        sinks = tuple(s for s in (progress, self._on_progress) if s is not None)
        paths: dict[str, Path] = {}
        for file in source.files:
            paths[file.filename] = await self._ensure_file(source.engine, model, file, sinks)
        return paths

    async def _ensure_file(
        self, engine: str, model: str, file: ModelFile, sinks: tuple[ProgressSink, ...]
    ) -> Path:
        found = self._existing(engine, model, file.filename)
        if found is not None:
            return found
        dest = self.model_dir(engine, model) / file.filename
        async with self._exclusive(dest):
            if dest.is_file():  # another caller fetched it while we waited
                return dest
            await self._download(_Fetch(model, file, dest, sinks))
        return dest

    @contextlib.asynccontextmanager
    async def _exclusive(self, dest: Path) -> AsyncIterator[None]:
        gate = self._gates.setdefault(dest, _Gate())
        gate.users += 1
        try:
            async with gate.lock:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[dest]

    # -- one file ----------------------------------------------------------------------

    async def _download(self, job: _Fetch) -> None:
        self._preflight(job)
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        start_overs = 0
        try:
            while True:
                job.written = 0
                try:
                    await self._attempt(job)
                    return
                except _StartOver as exc:
                    start_overs += 1
                    log.warning("download restarting: %s", exc, extra=job.log_extra())
                    if start_overs > MAX_START_OVERS:
                        raise ModelError(
                            f"{exc} (gave up after {start_overs} fresh starts)"
                        ) from None
                except _Transient as exc:
                    # An attempt that added bytes resets the count: a long download over a
                    # flaky link keeps going as long as it gets somewhere.
                    failures = 1 if job.written else failures + 1
                    log.warning(
                        "download %s: %s (attempt %d of %d)",
                        exc.kind,
                        exc.message,
                        failures,
                        self._max_attempts,
                        extra=job.log_extra(kind=exc.kind),
                    )
                    if failures >= self._max_attempts:
                        raise ModelError(
                            f"{exc.message} (gave up after {failures} attempts)"
                        ) from None
                    await asyncio.sleep(self._backoff_base_s * 2 ** (failures - 1))
        finally:
            self._emit(job, finished=True)

    def _preflight(self, job: _Fetch) -> None:
        declared = job.file.approx_bytes or 0
        if declared <= 0:
            return
        need = math.ceil(declared * DISK_HEADROOM) - _file_size(job.part)
        try:
            free = self._free_space(job.dest.parent)
        except OSError as exc:
            log.warning(
                "disk space probe failed, skipping the preflight: %s",
                exc,
                extra=job.log_extra(),
            )
            return
        if free < need:
            raise ModelError(
                f"not enough disk space for {job.file.filename}: need ~{need} bytes "
                f"(declared {declared} + 10% headroom) but only {free} bytes are free on "
                "the models filesystem — free up space or move models_root"
            )

    async def _attempt(self, job: _Fetch) -> None:
        resume_from = _file_size(job.part)
        headers = {"User-Agent": self._user_agent, "Accept-Encoding": "identity"}
        if resume_from:
            headers["Range"] = f"bytes={resume_from}-"
        log.info(
            "download starting: %s",
            job.url,
            extra=job.log_extra(resume_from=resume_from),
        )
        started = time.monotonic()
        response = await self._open(job, headers)
        try:
            await self._receive(job, response, resume_from)
        finally:
            await response.aclose()
        log.info(
            "download done: %d bytes",
            job.done,
            extra=job.log_extra(
                bytes=job.done,
                resumed_from=resume_from,
                elapsed_ms=round((time.monotonic() - started) * 1000),
            ),
        )

    async def _open(self, job: _Fetch, headers: dict[str, str]) -> httpx.Response:
        """GET with redirects followed by hand, so every hop passes the URL guard."""
        url = job.file.url
        timeout = httpx.Timeout(self._stall_s)
        for _hop in range(MAX_REDIRECTS + 1):
            request = self._http.build_request("GET", url, headers=headers, timeout=timeout)
            try:
                async with asyncio.timeout(self._stall_s):
                    response = await self._http.send(request, stream=True, follow_redirects=False)
            except (TimeoutError, httpx.TimeoutException):
                raise _Transient(
                    f"stalled: no response from {display_url(url)} in {self._stall_s:g} s",
                    "stalled",
                ) from None
            except httpx.TransportError as exc:
                raise _Transient(
                    f"request error: GET {display_url(url)}: {type(exc).__name__}: {exc}",
                    "request error",
                ) from None
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                await response.aclose()
                url = check_url(urljoin(url, location))
                continue
            return response
        raise ModelError(f"too many redirects fetching {job.url}")

    async def _receive(self, job: _Fetch, response: httpx.Response, resume_from: int) -> None:
        status = response.status_code
        if status == 416 and resume_from:
            await self._unsatisfiable(job, response, resume_from)
            return
        if not response.is_success:
            message = f"GET {job.url} -> {status}"
            if status >= 500 or status in RETRY_STATUSES:
                raise _Transient(message, "non-success status")
            log.warning("download non-success status", extra=job.log_extra(status=status))
            raise ModelError(message, retryable=status not in TERMINAL_STATUSES)

        content_length = _int_header(response, "content-length")
        declared_total: int | None = None
        if status == 206:
            span = _content_range(response.headers.get("content-range"))
            if span is None or span.start != resume_from:
                job.part.unlink(missing_ok=True)
                raise _StartOver(
                    f"asked for bytes from {resume_from} but the server sent "
                    f"Content-Range {response.headers.get('content-range')!r}"
                )
            declared_total = span.total
        elif resume_from:
            log.info(
                "server ignored the Range request: starting over from byte 0",
                extra=job.log_extra(status=status),
            )
            resume_from = 0
        if declared_total is not None:
            job.total = declared_total
        elif content_length is not None:
            job.total = resume_from + content_length
        else:
            job.total = None

        hasher = hashlib.sha256() if job.file.sha256 else None
        if hasher is not None and resume_from:
            await asyncio.to_thread(_hash_file, job.part, hasher)
        job.done = resume_from
        await self._stream(job, response, hasher, append=bool(resume_from))

        if content_length is not None and job.written != content_length:
            self._reject(
                job,
                "size mismatch",
                f"size mismatch: wrote {job.written} bytes but the server declared "
                f"Content-Length {content_length} (download truncated or corrupt)",
            )
        if declared_total is not None and job.done != declared_total:
            self._reject(
                job,
                "size mismatch",
                f"size mismatch: the file has {job.done} bytes but the server declared "
                f"a total of {declared_total} in Content-Range (download truncated or corrupt)",
            )
        self._verify(job, hasher)
        self._promote(job)

    async def _unsatisfiable(self, job: _Fetch, response: httpx.Response, resume_from: int) -> None:
        """416 to a resume: the partial may already be whole (`bytes */<its size>`)."""
        match = _UNSATISFIED_RANGE.match(response.headers.get("content-range") or "")
        if match is not None and int(match.group(1)) == resume_from:
            hasher = hashlib.sha256() if job.file.sha256 else None
            if hasher is not None:
                await asyncio.to_thread(_hash_file, job.part, hasher)
            job.done = job.total = resume_from
            self._verify(job, hasher)
            self._promote(job)
            return
        job.part.unlink(missing_ok=True)
        raise _StartOver(f"GET {job.url} -> 416 for a resume from byte {resume_from}")

    async def _stream(
        self,
        job: _Fetch,
        response: httpx.Response,
        hasher: hashlib._Hash | None,
        *,
        append: bool,
    ) -> None:
        started = time.monotonic()
        start_done = job.done
        try:
            fh = job.part.open("ab" if append else "wb")
        except OSError as exc:
            raise self._disk_error(job, exc) from exc
        try:
            self._emit(job, finished=False, force=True)
            chunks = response.aiter_raw(CHUNK_BYTES)
            while True:
                try:
                    async with asyncio.timeout(self._stall_s):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except (TimeoutError, httpx.TimeoutException):
                    raise _Transient(
                        f"stalled: no bytes from {job.url} for {self._stall_s:g} s "
                        f"(at byte {job.done})",
                        "stalled",
                    ) from None
                except httpx.TransportError as exc:
                    raise _Transient(
                        f"streaming body: {type(exc).__name__}: {exc} (at byte {job.done})",
                        "streaming body",
                    ) from None
                _write(fh, chunk)
                if hasher is not None:
                    hasher.update(chunk)
                job.written += len(chunk)
                job.done += len(chunk)
                elapsed = time.monotonic() - started
                job.rate_bps = (job.done - start_done) / elapsed if elapsed > 0 else 0.0
                self._emit(job, finished=False)
            await asyncio.to_thread(_flush_and_sync, fh)
        except OSError as exc:
            raise self._disk_error(job, exc) from exc
        finally:
            with contextlib.suppress(OSError):  # a full disk can fail the close's flush too
                fh.close()

    def _disk_error(self, job: _Fetch, exc: OSError) -> ModelError:
        kept = _file_size(job.part)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.warning("download disk full", extra=job.log_extra(kept=kept))
            return ModelError(
                f"disk full while writing {job.file.filename}: {kept} bytes are kept in "
                f"{job.part} and the download resumes from there — free up space or move "
                "models_root"
            )
        log.warning("download write failed: %s", exc, extra=job.log_extra(kept=kept))
        return ModelError(f"cannot write {job.part}: {exc.strerror or exc}")

    def _reject(self, job: _Fetch, kind: str, message: str) -> None:
        job.part.unlink(missing_ok=True)
        log.warning("download %s", kind, extra=job.log_extra(kind=kind))
        raise ModelError(message)

    def _verify(self, job: _Fetch, hasher: hashlib._Hash | None) -> None:
        expected = (job.file.sha256 or "").strip().lower()
        if hasher is None or not expected:
            return
        actual = hasher.hexdigest()
        if actual != expected:
            self._reject(
                job,
                "sha256 mismatch",
                f"sha256 mismatch: downloaded body hashes to {actual} but the registry "
                f"expects {expected} (corrupted or tampered download)",
            )

    def _promote(self, job: _Fetch) -> None:
        os.replace(job.part, job.dest)
        _sync_dir(job.dest.parent)
        job.ok = True

    def _emit(self, job: _Fetch, *, finished: bool, force: bool = False) -> None:
        now = time.monotonic()
        if not (finished or force) and now - job.last_emit < PROGRESS_INTERVAL_S:
            return
        job.last_emit = now
        eta: float | None = None
        if job.ok:
            eta = 0.0
        elif job.total is not None and job.rate_bps > 0:
            eta = max(job.total - job.done, 0) / job.rate_bps
        report = DownloadProgress(
            job.model, job.file.filename, job.done, job.total, job.rate_bps, eta, finished
        )
        for sink in job.sinks:
            try:
                sink(report)
            except Exception:
                log.exception("progress callback failed", extra=job.log_extra())

    # -- what is on disk ---------------------------------------------------------------

    def cached(self) -> list[CachedModel]:
        """Every `<engine>/<model>` folder with files in it, sorted by engine then model."""
        models: list[CachedModel] = []
        for engine_dir in _subdirs(self.root):
            if engine_dir.name in RESERVED_DIRS:
                continue
            for model_dir in _subdirs(engine_dir):
                files: list[CachedFile] = []
                partials: list[CachedFile] = []
                for entry in sorted(model_dir.iterdir()):
                    try:
                        if not entry.is_file():
                            continue
                        size = entry.stat().st_size
                    except FileNotFoundError:  # a partial renamed while we looked
                        continue
                    if entry.name.endswith(PARTIAL_SUFFIX):
                        partials.append(CachedFile(entry.name[: -len(PARTIAL_SUFFIX)], size))
                    else:
                        files.append(CachedFile(entry.name, size))
                if files or partials:
                    models.append(
                        CachedModel(
                            engine_dir.name,
                            model_dir.name,
                            model_dir,
                            tuple(files),
                            tuple(partials),
                        )
                    )
        return models

    def remove(self, engine: str, model: str) -> int:
        """Delete a cached model's folder (partials included); the bytes freed."""
        folder = self.model_dir(engine, model)
        if not folder.is_dir():
            raise ModelNotCached(
                f'model "{model}" for engine "{engine}" is not cached (no folder {folder})'
            )
        if any(dest.is_relative_to(folder) for dest in self._gates):
            raise ModelError(
                f'model "{model}" is downloading right now; remove it when that is over',
                retryable=False,
            )
        freed = sum(p.lstat().st_size for p in _walk_files(folder))
        shutil.rmtree(folder)
        with contextlib.suppress(OSError):  # the engine dir, once its last model is gone
            folder.parent.rmdir()
        log.info(
            "removed model %s (%d bytes)",
            folder,
            freed,
            extra={"op": "models_rm", "model": model, "engine": engine},
        )
        return freed


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _walk_files(folder: Path) -> Iterable[Path]:
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            yield Path(parent) / name
