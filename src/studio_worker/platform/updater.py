"""Self-update (docs/update.md): signed by TUF, installed between jobs, rolled back if sick.

An installed worker lives in versioned directories under one install root:

    <root>/<version>/studio-worker          one directory per installed version
    <root>/current -> <version>             POSIX: a relative symlink, flipped atomically
    <root>/current.txt                      Windows: the version name, rewritten atomically
    <root>/.update/metadata/                TUF metadata this worker trusts (root.json first)
    <root>/.update/targets/                 downloaded archives (the current one seeds patches)
    <root>/.update/state.json               pending switch, bad versions, last check
    <root>/<version>/.healthy               written once that version has started well

Every `auto_update_interval_secs` (at least 60 s) the updater asks the update repository
at `auto_update_feed` through tufup's client (signatures, expiry, rollback and freeze
protection come from TUF), downloads the newer archive (or the bsdiff patches) while jobs
run, unpacks it into `<root>/.staging-<version>`, then waits for the one-job slot, holds
it (holder `update`: offers meanwhile get `reject busy`), renames the staging directory
to `<root>/<version>` and flips `current` in one atomic step. Then the process is
replaced by the new version (POSIX `exec`; on Windows the process exits with
`RESTART_EXIT_CODE` and the scheduled task starts it again).

The new version must write its `.healthy` marker (`mark_healthy`) within
`HEALTH_DEADLINE_S` and before `MAX_UNHEALTHY_STARTS` starts; otherwise `boot` (at the
next start) or the running updater (at the deadline) switches `current` back, remembers
the version as bad and starts the previous one. The decision functions are pure over the
state file and the directory layout.

tufup and python-tuf are optional (`pip install 'studio-worker[update]'`): without them,
or outside an installed layout (a development checkout), self-update logs once that it is
off and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import sys
import tarfile
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

from studio_worker.config.settings import Settings
from studio_worker.domain.logs import LogLevel
from studio_worker.jobs.gate import JobGate

log = logging.getLogger(__name__)

RESTART_EXIT_CODE = 75
"""Exit code that asks the service to start the worker again (same value as
`platform.services.RESTART_EXIT_CODE`; EX_TEMPFAIL)."""
MIN_INTERVAL_S = 60
TICK_S = 60.0
HEALTH_DEADLINE_S = 300.0
MAX_UNHEALTHY_STARTS = 3
GATE_HOLDER = "update"
GATE_POLL_S = 0.05
CATEGORY = "auto-update"
APP = "studio-worker"
EXE_NAME = f"{APP}.exe" if sys.platform == "win32" else APP
UPDATE_DIR = ".update"
STATE_FILE = "state.json"
HEALTHY_MARKER = ".healthy"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
CURRENT_LINK = "current"
CURRENT_FILE = "current.txt"
VARIANT_FILE = ".variant"
ROOT_SEED = "update-root.json"
"""A copy of the repository's root.json that the release puts next to the executable:
the first trusted root of a fresh install (later roots are fetched and verified)."""
DEFAULT_UPDATE_REPOSITORY = "https://minis-gg.github.io/studio-worker/update/"
"""Where the release workflow publishes the update repository."""
REFERENCE_FEED_HOST = "api.github.com"

Pointer = Literal["symlink", "file"]
Outcome = Literal[
    "off", "up-to-date", "available", "skipped", "refused", "failed", "installed", "cancelled"
]
Report = Callable[[LogLevel, str, str], None]
"""`(level, category, message)`: the daemon's breadcrumbs (local log + shipped to studio)."""


# ---------------------------------------------------------------------------------------
# Install layout


_VERSION_RE = re.compile(r"^v?\d+(\.\d+)*([-_.+]?[0-9A-Za-z]+)*$")


def _is_version(name: str) -> bool:
    """A version folder name (`1.5.0`, `1.6.0-rc.1`); needs nothing beyond the stdlib."""
    return bool(_VERSION_RE.match(name))


def host_target(
    variant: str = "cpu", *, system: str | None = None, machine: str | None = None
) -> str | None:
    """The release target triple of this machine (`-cuda` for the CUDA variant)."""
    system = system or platform.system()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}.get(
        (machine or platform.machine()).lower()
    )
    vendor_os = {
        "Linux": "unknown-linux-gnu",
        "Darwin": "apple-darwin",
        "Windows": "pc-windows-msvc",
    }.get(system)
    if arch is None or vendor_os is None:
        return None
    return f"{arch}-{vendor_os}" + ("-cuda" if variant == "cuda" else "")


def default_install_root() -> Path:
    """Where the installers put versions: `~/.local/share/studio-worker` (Linux, macOS),
    `%LOCALAPPDATA%\\studio-worker` (Windows)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP
    return Path.home() / ".local" / "share" / APP


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if sys.platform == "win32":
        return
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            file = Path(dirpath) / name
            if file.is_symlink():
                continue
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def read_current(root: Path) -> str | None:
    """The version `current` points at (symlink or pointer file), None when unset."""
    pointer = root / CURRENT_FILE
    if pointer.is_file():
        return pointer.read_text(encoding="utf-8").strip() or None
    link = root / CURRENT_LINK
    if link.is_symlink():
        return Path(os.readlink(link)).name
    return None


def switch_current(root: Path, version: str, pointer: Pointer) -> None:
    """Point `current` at `version` in one atomic step (rename over the old pointer)."""
    if pointer == "file":
        _atomic_write(root / CURRENT_FILE, f"{version}\n".encode())
        return
    tmp = root / f".{CURRENT_LINK}-{uuid.uuid4().hex[:8]}"
    os.symlink(version, tmp, target_is_directory=True)
    try:
        os.replace(tmp, root / CURRENT_LINK)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(root)


@dataclass(frozen=True)
class InstallLayout:
    """One install root and the version this process runs from."""

    root: Path
    version: str
    pointer: Pointer = "file" if sys.platform == "win32" else "symlink"
    exe_name: str = EXE_NAME

    @property
    def update_dir(self) -> Path:
        return self.root / UPDATE_DIR

    @property
    def state_path(self) -> Path:
        return self.update_dir / STATE_FILE

    @property
    def metadata_dir(self) -> Path:
        return self.update_dir / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.update_dir / "targets"

    def version_dir(self, version: str) -> Path:
        return self.root / version

    def executable(self, version: str) -> Path:
        return self.version_dir(version) / self.exe_name

    def staging_dir(self, version: str) -> Path:
        return self.root / f"{STAGING_PREFIX}{version}"

    def current(self) -> str | None:
        return read_current(self.root)

    def switch(self, version: str) -> None:
        switch_current(self.root, version, self.pointer)

    def healthy(self, version: str) -> bool:
        return (self.version_dir(version) / HEALTHY_MARKER).exists()

    def variant(self) -> str:
        """`cpu` or `cuda`: what the installer wrote in `<version>/.variant` (default cpu)."""
        try:
            text = (self.version_dir(self.version) / VARIANT_FILE).read_text(encoding="utf-8")
        except OSError:
            return "cpu"
        return text.strip() or "cpu"


def running_executable() -> Path:
    """The file this process was started from (the Nuitka binary, or a console script)."""
    exe = Path(sys.executable)
    if not exe.name.lower().startswith("python"):
        return exe.resolve()
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else str(exe)
    if os.sep not in argv0 and "/" not in argv0:
        argv0 = shutil.which(argv0) or argv0
    return Path(argv0).resolve()


def locate_install(executable: Path | None = None) -> InstallLayout | str:
    """The layout this executable belongs to, or why it is not an installed one."""
    exe = (executable or running_executable()).resolve()
    version_dir = exe.parent
    root = version_dir.parent
    if not _is_version(version_dir.name):
        return f"{exe} is not in a versioned install directory (<root>/<version>/)"
    if (root / CURRENT_FILE).is_file():
        return InstallLayout(root, version_dir.name, "file", exe.name)
    if (root / CURRENT_LINK).is_symlink():
        return InstallLayout(root, version_dir.name, "symlink", exe.name)
    return f"{root} has no `{CURRENT_LINK}` pointer"


# ---------------------------------------------------------------------------------------
# State file and the rollback decision (pure)


@dataclass(frozen=True)
class Pending:
    """A switch to `version` that has not proved healthy yet."""

    version: str
    previous: str
    switched_at: float
    starts: int = 0


@dataclass(frozen=True)
class UpdateState:
    pending: Pending | None = None
    previous: str | None = None
    bad: tuple[str, ...] = ()
    bad_reasons: dict[str, str] = field(default_factory=dict)
    last_check: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        data = asdict(self)
        data["bad"] = list(self.bad)
        return json.dumps(data, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> UpdateState:
        data = json.loads(raw)
        pending = data.get("pending")
        return cls(
            pending=Pending(**pending) if pending else None,
            previous=data.get("previous"),
            bad=tuple(data.get("bad") or ()),
            bad_reasons=dict(data.get("bad_reasons") or {}),
            last_check=data.get("last_check"),
            rollback=data.get("rollback"),
        )


def load_state(path: Path) -> UpdateState:
    try:
        return UpdateState.from_json(path.read_bytes())
    except FileNotFoundError:
        return UpdateState()
    except (OSError, ValueError, TypeError) as exc:
        log.warning("update state %s unreadable (%s); starting afresh", path, exc)
        return UpdateState()


def save_state(path: Path, state: UpdateState) -> None:
    _atomic_write(path, state.to_json())


@dataclass(frozen=True)
class BootDecision:
    action: Literal["run", "rollback"]
    reason: str = ""
    version: str | None = None
    """For a rollback: the version to start instead."""
    watch_until: float | None = None
    """While this version is on trial: the wall time it must be healthy by."""


def decide_boot(
    state: UpdateState,
    *,
    running: str,
    current: str | None,
    healthy: bool,
    now: float,
    deadline_s: float = HEALTH_DEADLINE_S,
    max_starts: int = MAX_UNHEALTHY_STARTS,
) -> tuple[UpdateState, BootDecision]:
    """What a starting process does about a pending switch. Pure: returns the new state."""
    pending = state.pending
    if pending is None:
        return state, BootDecision("run")
    if pending.version != running:
        if current != pending.version:  # the switch never happened (crash before it)
            return replace(state, pending=None), BootDecision("run")
        return state, BootDecision("run")  # an older binary started by hand: leave it be
    if healthy:
        return replace(state, pending=None, previous=pending.previous), BootDecision("run")
    earlier = pending.starts
    starts = earlier + 1
    overdue = earlier >= 1 and now - pending.switched_at > deadline_s
    if starts > max_starts or overdue:
        reason = (
            f"not healthy after {earlier} starts"
            if starts > max_starts
            else f"not healthy within {deadline_s:.0f} s of the switch"
        )
        return rolled_back(state, reason, now), BootDecision(
            "rollback", reason=reason, version=pending.previous
        )
    trial = replace(state, pending=replace(pending, starts=starts))
    return trial, BootDecision("run", watch_until=pending.switched_at + deadline_s)


def rolled_back(state: UpdateState, reason: str, now: float) -> UpdateState:
    """The state after giving up on the pending version (pure)."""
    assert state.pending is not None
    bad = state.pending.version
    return replace(
        state,
        pending=None,
        previous=None,
        bad=(*[v for v in state.bad if v != bad], bad),
        bad_reasons={**state.bad_reasons, bad: reason},
        rollback={
            "from": bad,
            "to": state.pending.previous,
            "reason": reason,
            "at": _iso(now),
            "reported": False,
        },
    )


def boot(
    layout: InstallLayout,
    *,
    now: float | None = None,
    deadline_s: float = HEALTH_DEADLINE_S,
    max_starts: int = MAX_UNHEALTHY_STARTS,
) -> BootDecision:
    """Call first thing at start: counts the start of a version on trial and, when it has
    failed, switches `current` back (the caller then starts `decision.version`)."""
    now = time.time() if now is None else now
    state = load_state(layout.state_path)
    new_state, decision = decide_boot(
        state,
        running=layout.version,
        current=layout.current(),
        healthy=layout.healthy(layout.version),
        now=now,
        deadline_s=deadline_s,
        max_starts=max_starts,
    )
    if decision.action == "rollback":
        assert decision.version is not None
        if not layout.executable(decision.version).exists():
            log.error(
                "update %s is %s but version %s is gone; staying",
                layout.version,
                decision.reason,
                decision.version,
            )
            return BootDecision("run")
        layout.switch(decision.version)
        log.error(
            "update %s rolled back to %s: %s",
            layout.version,
            decision.version,
            decision.reason,
            extra={"op": "auto_update"},
        )
    if new_state != state:
        save_state(layout.state_path, new_state)
    return decision


def rollback_now(layout: InstallLayout, reason: str, now: float | None = None) -> str | None:
    """Give up on the running version (it is on trial): switch back; returns the version to
    start, or None when nothing is pending for this version."""
    now = time.time() if now is None else now
    state = load_state(layout.state_path)
    pending = state.pending
    if pending is None or pending.version != layout.version:
        return None
    if not layout.executable(pending.previous).exists():
        return None
    layout.switch(pending.previous)
    save_state(layout.state_path, rolled_back(state, reason, now))
    return pending.previous


def mark_healthy(layout: InstallLayout) -> None:
    """The running version started well (config loaded, engines up or session connected):
    write its marker, end its trial, and drop versions no longer needed."""
    _atomic_write(layout.version_dir(layout.version) / HEALTHY_MARKER, _iso(time.time()).encode())
    state = load_state(layout.state_path)
    if state.pending is not None and state.pending.version == layout.version:
        state = replace(state, pending=None, previous=state.pending.previous)
        save_state(layout.state_path, state)
    keep = {layout.version, layout.current(), state.previous}
    for child in layout.root.iterdir():
        name = child.name
        stale = child.is_dir() and not child.is_symlink() and _is_version(name) and name not in keep
        if stale or name.startswith(TRASH_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
    if layout.targets_dir.is_dir():
        for cached in layout.targets_dir.iterdir():
            if f"-{layout.version}." not in cached.name or cached.name.endswith(".failed"):
                cached.unlink(missing_ok=True)


def last_check(layout: InstallLayout) -> tuple[str, Result] | None:
    """When the last check (or install) ran and its result, from `state.json`."""
    entry = load_state(layout.state_path).last_check
    if not entry:
        return None
    try:
        result = Result(
            outcome=entry["outcome"],
            current=entry["current"],
            latest=entry.get("latest"),
            detail=entry.get("detail", ""),
        )
    except (KeyError, TypeError):
        return None
    return str(entry.get("at", "?")), result


def last_check_summary(layout: InstallLayout) -> str | None:
    """For `studio-worker status`: `last update check <when>: <outcome line>`."""
    found = last_check(layout)
    if found is None:
        return None
    at, result = found
    return f"last update check {at}: {result.describe()}"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------
# Restart


def exec_argv(executable: Path, argv: list[str] | None = None) -> list[str]:
    args = sys.argv[1:] if argv is None else argv
    return [str(executable), *args]


def restart_process(executable: Path, argv: list[str] | None = None) -> int:
    """Become `executable` with the same arguments (POSIX exec); on Windows return
    `RESTART_EXIT_CODE` for the scheduled task to start the new `current`."""
    if sys.platform == "win32":
        return RESTART_EXIT_CODE
    args = exec_argv(executable, argv)
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        _exec(args)
    except OSError as exc:
        log.error("re-exec of %s failed: %s", executable, exc)
        return 1
    return 1  # pragma: no cover - exec does not return


def _exec(args: list[str]) -> NoReturn:
    os.execv(args[0], args)


# ---------------------------------------------------------------------------------------
# The updater


@dataclass(frozen=True)
class UpdateProgress:
    version: str
    done: int
    total: int


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    current: str
    latest: str | None = None
    detail: str = ""

    def describe(self) -> str:
        """The `check-update` line."""
        if self.outcome == "up-to-date":
            return f"up to date: {self.current}"
        if self.outcome in ("available", "installed"):
            verb = "installed" if self.outcome == "installed" else "available"
            return f"update {verb}: {self.current} -> {self.latest}"
        if self.outcome in ("off", "skipped"):
            return self.detail  # already a sentence: `self-update is off…`, `update … skipped…`
        return f"{self.outcome}: {self.detail}"

    @property
    def ok(self) -> bool:
        """The check or install did what was asked (`check-update` and `update` exit 0)."""
        return self.outcome in ("up-to-date", "available", "installed", "skipped")

    def to_json(self) -> dict[str, Any]:
        """The local API's answer (`POST /daemon/update/check|install`) and `status --json`."""
        return {
            "outcome": self.outcome,
            "message": self.describe(),
            "current": self.current,
            "latest": self.latest,
            "detail": self.detail,
        }


class _Stopped(Exception):
    pass


class _Refused(Exception):
    """A verification refusal: the message says what failed."""


class _CapturedLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextlib.contextmanager
def _tufup_log() -> Iterator[_CapturedLog]:
    """tufup reports some refusals only as log lines: catch them to say them aloud."""
    handler = _CapturedLog()
    logger = logging.getLogger("tufup")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _describe_tuf_error(exc: BaseException) -> tuple[Outcome, str]:
    """A refusal for what TUF rejected, a failure for what it could not fetch."""
    from tuf.api import exceptions as tuf_errors

    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return "refused", (
            f"metadata expired ({exc}): the repository was not re-signed in time, or a"
            " stale copy is being replayed"
        )
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return "refused", f"metadata older than what this worker already trusts ({exc})"
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return "refused", f"metadata signature check failed ({exc})"
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return "refused", f"metadata does not match its signed length or hash ({exc})"
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return "refused", f"longer than its signed length ({exc})"
    if isinstance(exc, tuf_errors.RepositoryError):
        return "refused", f"metadata rejected ({type(exc).__name__}: {exc})"
    if isinstance(exc, tuf_errors.DownloadError):
        return "failed", f"update repository unreachable ({type(exc).__name__}: {exc})"
    return "failed", f"{type(exc).__name__}: {exc}"


def _describe_download_error(exc: BaseException, what: str) -> tuple[Outcome, str]:
    from tuf.api import exceptions as tuf_errors

    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return (
            "refused",
            f"{what} does not match its signed hash or length ({exc}):"
            " tampered or corrupted download",
        )
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return "refused", f"{what} is longer than its signed length ({exc})"
    return _describe_tuf_error(exc)


SETUPTOOLS_STAND_INS = ("setuptools", "setuptools.config", "setuptools.config.expand")


def tufup_client() -> Any:
    """`tufup.client`, also in a process without setuptools (the release binary).

    `import tufup` runs tufup's `__init__`, which imports its repository side
    (`tufup.repo`), whose first line is `import setuptools.config.expand` (a PyInstaller
    workaround) guarded against an AssertionError only. build/build.py leaves setuptools
    out of the binary, so there that ImportError took tufup's client with it and every
    built worker said its self-update was off. The client never uses setuptools: where it
    cannot be found, that one import is given empty stand-ins for those three module
    names, removed again right after (nothing else in the process sees them).
    """
    added = []
    if not _findable("setuptools"):
        added = [name for name in SETUPTOOLS_STAND_INS if name not in sys.modules]
    for name in added:
        sys.modules[name] = types.ModuleType(name)
    try:
        from tufup import client  # type: ignore[import-untyped, unused-ignore]
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return client


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_feed(feed: str) -> str:
    """The update repository URL; the reference worker's GitHub releases API (kept in old
    config files) means our own default repository."""
    if REFERENCE_FEED_HOST in feed and "/releases" in feed:
        return DEFAULT_UPDATE_REPOSITORY
    return feed if feed.endswith("/") else feed + "/"


def effective_interval(settings: Settings, minimum: float = MIN_INTERVAL_S) -> float:
    return max(float(minimum), float(settings.auto_update_interval_secs))


@dataclass
class _Check:
    result: Result
    client: Any = None
    meta: Any = None


def harden_archive_extraction() -> None:
    """Make every tar extraction in this process refuse entries that would land outside
    the target folder (`..`, absolute paths, links out, devices): PEP 706's `data` filter
    as the default. tufup unpacks with `shutil.unpack_archive` and no filter; signed
    archives should never hold such entries, and now they cannot act on them either.
    (zip extraction in `shutil` already drops `..` and absolute parts.)"""
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
        tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter)


class Updater:
    """The auto-update loop of the daemon (`run`), and one-shot `check_now`/`update_now`.

    `restart(executable)` is called after a successful switch (and after a rollback at the
    health deadline): the daemon stops gracefully and then calls `restart_process`. The
    one-job slot stays held by `update` from the switch until the process is replaced.
    """

    def __init__(
        self,
        *,
        layout: InstallLayout | str | None,
        settings: Callable[[], Settings],
        gate: JobGate,
        restart: Callable[[Path], None],
        target: str | None = None,
        report: Report | None = None,
        on_progress: Callable[[UpdateProgress], None] | None = None,
        on_staged: Callable[[str, Path], None] | None = None,
        boot_decision: BootDecision | None = None,
        tick_s: float = TICK_S,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        harden_archive_extraction()
        self.layout = layout if isinstance(layout, InstallLayout) else None
        self._not_installed = layout if isinstance(layout, str) else "no install layout"
        self._settings = settings
        self._gate = gate
        self._restart = restart
        self._target = target or host_target(self.layout.variant() if self.layout else "cpu")
        self._report = report
        self._on_progress = on_progress
        self._on_staged = on_staged
        self._watch_until = boot_decision.watch_until if boot_decision else None
        self._tick_s = tick_s
        self._min_interval_s = min_interval_s
        self._stopping = threading.Event()
        self._busy = asyncio.Lock()
        self._said: set[str] = set()
        self._switched_to: str | None = None
        self.last: Result | None = None

    # -- reporting ---------------------------------------------------------------------

    def _say(self, level: LogLevel, message: str) -> None:
        if self._report is not None:
            self._report(level, CATEGORY, message)
            return
        py_level = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
        log.log(py_level[level], "%s", message, extra={"op": "auto_update"})

    def _say_once(self, key: str, level: LogLevel, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._say(level, message)

    @property
    def current_version(self) -> str:
        return self.layout.version if self.layout else "unknown"

    def why_off(self) -> str | None:
        """Why self-update cannot work on this install, or None when it can."""
        if self.layout is None:
            return f"self-update is off for this install: {self._not_installed}"
        if self._target is None:
            return f"self-update is off: no release target for {platform.system()}"
        try:
            tufup_client()
        except ImportError as exc:
            if (exc.name or "").split(".", 1)[0] == "tufup":
                return "self-update is off: tufup is not installed (the `update` extra)"
            return f"self-update is off: tufup cannot be imported ({type(exc).__name__}: {exc})"
        if not self._trusted_root():
            return (
                "self-update is off: no trusted root metadata (neither"
                f" {self.layout.metadata_dir / 'root.json'} nor {ROOT_SEED} next to the"
                " executable)"
            )
        return None

    def _trusted_root(self) -> bool:
        assert self.layout is not None
        trusted = self.layout.metadata_dir / "root.json"
        if trusted.exists():
            return True
        seed = self.layout.version_dir(self.layout.version) / ROOT_SEED
        if not seed.exists():
            return False
        _atomic_write(trusted, seed.read_bytes())
        return True

    # -- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Check every interval (first check after one full interval), until `stop`."""
        off = self.why_off()
        if off is not None:
            self._say_once("off", "info", off)
            return
        self._report_rollback()
        elapsed = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick_s):
                    await stop.wait()
                return
            if await self._health_deadline_passed():
                return
            settings = self._settings()
            if not settings.auto_update_enabled:
                elapsed = 0.0
                continue
            elapsed += self._tick_s
            if elapsed + 1e-9 < effective_interval(settings, self._min_interval_s):
                continue
            elapsed = 0.0
            if (await self.update_now(stop)).outcome == "installed":
                return  # the process is about to be replaced: nothing more to check

    def _report_rollback(self) -> None:
        assert self.layout is not None
        state = load_state(self.layout.state_path)
        info = state.rollback
        if info and not info.get("reported"):
            self._say(
                "error",
                f"update {info['from']} rolled back to {info['to']}: {info['reason']}",
            )
            info = {**info, "reported": True}
            save_state(self.layout.state_path, replace(state, rollback=info))

    async def _health_deadline_passed(self) -> bool:
        layout = self.layout
        if self._watch_until is None or layout is None:
            return False
        if layout.healthy(layout.version):
            self._watch_until = None
            return False
        if time.time() < self._watch_until:
            return False
        reason = "not healthy by the deadline after the switch"
        previous = await asyncio.to_thread(rollback_now, layout, reason)
        self._watch_until = None
        if previous is None:
            return False
        self._say("error", f"update {layout.version} rolled back to {previous}: {reason}")
        self._restart(layout.executable(previous))
        return True

    # -- one cycle ---------------------------------------------------------------------

    async def check_now(self) -> Result:
        """Ask the repository; never downloads an archive nor installs."""
        off = self.why_off()
        if off is not None:
            return self._record(Result("off", self.current_version, detail=off))
        async with self._busy:
            check = await asyncio.to_thread(self._check, download=False)
        return self._record(check.result)

    async def update_now(self, stop: asyncio.Event | None = None) -> Result:
        """Check, download, wait for the one-job slot, install, restart."""
        off = self.why_off()
        if off is not None:
            self._say_once("off", "info", off)
            return self._record(Result("off", self.current_version, detail=off))
        if self._switched_to is not None:  # installed; the restart is under way
            return Result("installed", self.current_version, self._switched_to, "restart pending")
        async with self._busy, self._stop_bridge(stop):
            check = await asyncio.to_thread(self._check)
            result = check.result
            if result.outcome == "available":
                result = await asyncio.to_thread(self._apply, check)
        self._record(result)
        if result.outcome == "installed":
            assert self.layout is not None and result.latest is not None
            self._switched_to = result.latest
            self._restart(self.layout.executable(result.latest))
        return result

    @contextlib.asynccontextmanager
    async def _stop_bridge(self, stop: asyncio.Event | None) -> AsyncIterator[None]:
        self._stopping.clear()
        if stop is None:
            yield
            return

        async def bridge() -> None:
            await stop.wait()
            self._stopping.set()

        task = asyncio.create_task(bridge())
        try:
            yield
        finally:
            task.cancel()

    def stop(self) -> None:
        """Abandon a wait for the job slot (the daemon is stopping)."""
        self._stopping.set()

    def _record(self, result: Result) -> Result:
        self.last = result
        layout = self.layout
        if layout is not None and result.outcome != "off":
            state = load_state(layout.state_path)
            entry = {"at": _iso(time.time()), **asdict(result)}
            with contextlib.suppress(OSError):
                save_state(layout.state_path, replace(state, last_check=entry))
        return result

    # -- blocking parts (worker thread) ------------------------------------------------

    def _client(self) -> Any:
        client = tufup_client()

        assert self.layout is not None and self._target is not None
        feed = resolve_feed(self._settings().auto_update_feed)
        self.layout.targets_dir.mkdir(parents=True, exist_ok=True)
        return client.Client(
            app_name=f"{APP}-{self._target}",
            app_install_dir=self.layout.root,
            current_version=self.layout.version,
            metadata_dir=self.layout.metadata_dir,
            metadata_base_url=feed + "metadata/",
            target_dir=self.layout.targets_dir,
            target_base_url=feed + "targets/",
        )

    def _refresh_metadata(self) -> None:
        """A full TUF refresh with python-tuf's own client first: its exceptions say what
        was wrong, where tufup's check only logs a warning and returns nothing."""
        from tuf.ngclient.updater import Updater as TufUpdater

        assert self.layout is not None
        feed = resolve_feed(self._settings().auto_update_feed)
        TufUpdater(
            metadata_dir=str(self.layout.metadata_dir),
            metadata_base_url=feed + "metadata/",
        ).refresh()

    def _check(self, *, full: bool = False, download: bool = True) -> _Check:
        current = self.current_version
        try:
            self._refresh_metadata()
            client = self._client()
            with _tufup_log() as captured:
                pre = "a" if self._settings().auto_update_prerelease else None
                meta = client.check_for_updates(pre=pre, patch=not full)
        except Exception as exc:
            outcome, detail = _describe_tuf_error(exc)
            return _Check(self._refusal(outcome, current, None, detail))
        if meta is None:
            problems = captured.messages()
            if any("Cannot refresh metadata" in m for m in problems):
                detail = "; ".join(problems)
                return _Check(self._refusal("refused", current, None, detail))
            return _Check(Result("up-to-date", current))
        # The version as published (`1.1.0-rc.1`), not normalised: it names directories.
        latest = str(meta.parse_filename(meta.filename).get("version") or meta.version)
        bad = load_state(self.layout.state_path).bad_reasons if self.layout else {}
        if latest in bad:
            detail = f"update {latest} skipped: it was rolled back on this worker ({bad[latest]})"
            self._say_once(f"bad-{latest}", "warn", detail)
            return _Check(Result("skipped", current, latest, detail))
        if not download:
            self._say("info", f"update available {current} -> {latest}")
        elif not full:
            self._say("info", f"update available {current} -> {latest}; downloading")
            self._complete_patch_chain(client, meta)
        return _Check(Result("available", current, latest), client, meta)

    def _refusal(self, outcome: Outcome, current: str, latest: str | None, detail: str) -> Result:
        if outcome == "refused":
            what = f"update {latest}" if latest else "update check"
            self._say("error", f"{what} refused: {detail}")
        else:
            self._say("warn", f"check failed: {detail}")
        return Result(outcome, current, latest, detail)

    def _complete_patch_chain(self, client: Any, meta: Any) -> None:
        """tufup applies every patch up to the new version; a release published without a
        patch (it was not smaller) breaks the chain: take the full archive then."""
        patches = {m.version for m in client.new_targets if m.is_patch}
        if not patches:
            return
        app = meta.name
        current = client.current_archive.version
        archives = {
            m.version
            for m in client.trusted_target_metas
            if m.is_archive and m.name == app and current < m.version <= meta.version
        }
        if patches != archives:
            client.new_targets = {meta: client.new_archive_info}

    def _progress_hook(self, version: str) -> Callable[..., None]:
        step = [0]

        def hook(bytes_downloaded: int, bytes_expected: int) -> None:
            if self._on_progress is not None:
                self._on_progress(UpdateProgress(version, bytes_downloaded, bytes_expected))
            quarter = 4 * bytes_downloaded // max(1, bytes_expected)
            if quarter > step[0]:
                step[0] = quarter
                log.info(
                    "downloading update %s: %d%% (%d of %d bytes)",
                    version,
                    100 * bytes_downloaded // max(1, bytes_expected),
                    bytes_downloaded,
                    bytes_expected,
                    extra={"op": "auto_update"},
                )

        return hook

    def _apply(self, check: _Check) -> Result:
        """Download (patches or archive), verify, stage, then install under the gate.

        A patch that is refused or does not rebuild the signed archive is set aside and the
        full archive is fetched in the same cycle; a refused archive ends the cycle.
        """
        assert self.layout is not None and check.result.latest is not None
        current, latest = check.result.current, check.result.latest
        while True:
            patched = any(m.is_patch for m in check.client.new_targets)
            what = "patch" if patched else "archive"
            try:
                applied, errors = self._download_and_install(check.client, latest)
            except _Stopped:
                self._clean_staging()
                return Result("cancelled", current, latest, "stopping before the install")
            except _Refused as exc:
                self._clean_staging()
                return self._refusal("refused", current, latest, str(exc))
            except Exception as exc:
                self._release_gate()
                self._clean_staging()
                outcome, detail = _describe_download_error(exc, what)
                if outcome == "refused" and patched:
                    check = self._full_archive(latest, f"{what} refused: {detail}")
                    if check.result.outcome != "available":
                        return check.result
                    continue
                return self._refusal(outcome, current, latest, detail)
            if applied:
                self._say("info", f"update {latest} installed; restarting into it")
                return Result("installed", current, latest)
            self._clean_staging()
            detail = f"{what} failed verification ({errors or 'the update was not applied'})"
            if not patched:
                return self._refusal("refused", current, latest, detail)
            check = self._full_archive(latest, detail)
            if check.result.outcome != "available":
                return check.result

    def _download_and_install(self, client: Any, version: str) -> tuple[bool, str]:
        """tufup's download, verification, patching and extraction into the staging
        directory; our install (`_install`) instead of its default, which cannot do Linux
        and is not atomic. Returns whether it installed and tufup's logged errors."""
        assert self.layout is not None
        self._clean_staging()
        client.extract_dir = self.layout.staging_dir(version)
        installed: list[str] = []

        def install(src_dir: Path, dst_dir: Path, **_: Any) -> None:
            self._install(version, Path(src_dir))
            installed.append(version)

        with _tufup_log() as captured:
            client.download_and_apply_update(
                skip_confirmation=True,
                install=install,
                progress_hook=self._progress_hook(version),
            )
        return bool(installed), "; ".join(captured.messages(logging.ERROR))

    def _full_archive(self, version: str, why: str) -> _Check:
        self._say("warn", f"update {version}: {why}; downloading the full archive instead")
        check = self._check(full=True)
        if check.result.outcome == "available" and check.result.latest != version:
            return _Check(Result("failed", self.current_version, version, "repository changed"))
        return check

    def _clean_staging(self) -> None:
        assert self.layout is not None
        for child in self.layout.root.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(child, ignore_errors=True)

    def _release_gate(self) -> None:
        self._gate.release(GATE_HOLDER)

    def _wait_for_gate(self, version: str) -> None:
        """Hold the one-job slot: at once when free, else as its queued next holder, so
        the running job's end hands the slot to the install before any new offer."""
        waiting = False
        while not self._gate.reserve_next(GATE_HOLDER):
            if not waiting:
                waiting = True
                self._say("info", f"update {version} ready; waiting for the running job to end")
            if self._stopping.wait(GATE_POLL_S):
                self._gate.cancel_next(GATE_HOLDER)
                self._release_gate()  # the slot may have been handed over meanwhile
                raise _Stopped
        if self._stopping.is_set():
            self._release_gate()
            raise _Stopped

    def _install(self, version: str, staging: Path) -> None:
        """Staged tree -> `<root>/<version>` -> `current`, with the job slot held."""
        layout = self.layout
        assert layout is not None
        payload = staging
        entries = [p for p in staging.iterdir()]
        if not (staging / layout.exe_name).exists() and len(entries) == 1 and entries[0].is_dir():
            payload = entries[0]  # an archive with one top-level folder
        exe = payload / layout.exe_name
        if not exe.is_file():
            raise _Refused(f"the archive holds no {layout.exe_name} at its top")
        if sys.platform != "win32":
            exe.chmod(exe.stat().st_mode | 0o111)
        (payload / VARIANT_FILE).write_text(f"{layout.variant()}\n", encoding="utf-8")
        _fsync_tree(payload)
        if self._on_staged is not None:
            self._on_staged(version, payload)
        self._wait_for_gate(version)
        try:
            final = layout.version_dir(version)
            if final.exists() and layout.current() == version:
                # Installed meanwhile (the installer, or `studio-worker update` from a
                # shell): it is in use, leave it; only the restart is missing.
                shutil.rmtree(staging, ignore_errors=True)
            else:
                if final.exists():  # debris of an earlier attempt, not in use
                    trash = layout.root / f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
                    os.replace(final, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                os.replace(payload, final)
                _fsync_dir(layout.root)
            state = load_state(layout.state_path)
            pending = Pending(version=version, previous=layout.version, switched_at=time.time())
            save_state(layout.state_path, replace(state, pending=pending))
            layout.switch(version)
        except BaseException:
            self._release_gate()
            raise
        if payload != staging:
            shutil.rmtree(staging, ignore_errors=True)
