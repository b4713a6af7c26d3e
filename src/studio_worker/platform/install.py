"""The installed worker's layout, its update state and the rollback decision (docs/update.md).

    <root>/<version>/studio-worker          one directory per installed version
    <root>/current -> <version>             POSIX: a relative symlink, flipped atomically
    <root>/current.txt                      Windows: the version name, rewritten atomically
    <root>/.update/metadata/                TUF metadata this worker trusts (root.json first)
    <root>/.update/targets/                 downloaded archives (the current one seeds patches)
    <root>/.update/state.json               pending switch, bad versions, last check
    <root>/<version>/.healthy               written once that version has started well

A new version must write its `.healthy` marker (`mark_healthy`) within
`HEALTH_DEADLINE_S` and before `MAX_UNHEALTHY_STARTS` starts; otherwise `boot` (at the
next start) switches `current` back, remembers the version as bad and starts the
previous one. The decision functions are pure over the state file and the layout; the
loop that downloads and installs is `platform.updater`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

log = logging.getLogger(__name__)

RESTART_EXIT_CODE = 75
"""Exit code that asks the service to start the worker again (same value as
`platform.services.RESTART_EXIT_CODE`; EX_TEMPFAIL)."""
HEALTH_DEADLINE_S = 300.0
MAX_UNHEALTHY_STARTS = 3
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
Pointer = Literal["symlink", "file"]
Outcome = Literal[
    "off", "up-to-date", "available", "skipped", "refused", "failed", "installed", "cancelled"
]


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


def atomic_write(path: Path, data: bytes) -> None:
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
    fsync_dir(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    if sys.platform != "win32":  # Windows cannot open a folder to flush it
        _fsync(path)


def fsync_tree(path: Path) -> None:
    if sys.platform == "win32":
        return
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            if not (file := Path(dirpath) / name).is_symlink():
                _fsync(file)
        _fsync(Path(dirpath))


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
        atomic_write(root / CURRENT_FILE, f"{version}\n".encode())
        return
    tmp = root / f".{CURRENT_LINK}-{uuid.uuid4().hex[:8]}"
    os.symlink(version, tmp, target_is_directory=True)
    try:
        os.replace(tmp, root / CURRENT_LINK)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(root)


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
    atomic_write(path, state.to_json())


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
            "at": iso_time(now),
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
    atomic_write(
        layout.version_dir(layout.version) / HEALTHY_MARKER, iso_time(time.time()).encode()
    )
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


def iso_time(moment: float) -> str:
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
