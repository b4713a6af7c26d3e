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
import logging
import os
import platform
import shutil
import sys
import tarfile
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from studio_worker.config.settings import Settings
from studio_worker.domain.logs import LogLevel
from studio_worker.jobs.gate import JobGate
from studio_worker.platform.install import (
    APP,
    CURRENT_FILE,
    CURRENT_LINK,
    EXE_NAME,
    HEALTH_DEADLINE_S,
    HEALTHY_MARKER,
    MAX_UNHEALTHY_STARTS,
    RESTART_EXIT_CODE,
    ROOT_SEED,
    STAGING_PREFIX,
    STATE_FILE,
    TRASH_PREFIX,
    UPDATE_DIR,
    VARIANT_FILE,
    BootDecision,
    InstallLayout,
    Outcome,
    Pending,
    Pointer,
    Result,
    UpdateState,
    atomic_write,
    boot,
    decide_boot,
    default_install_root,
    exec_argv,
    fsync_dir,
    fsync_tree,
    host_target,
    iso_time,
    last_check,
    last_check_summary,
    load_state,
    locate_install,
    mark_healthy,
    read_current,
    restart_process,
    rollback_now,
    rolled_back,
    running_executable,
    save_state,
    switch_current,
)

log = logging.getLogger(__name__)

__all__ = [
    "CURRENT_FILE",
    "CURRENT_LINK",
    "EXE_NAME",
    "HEALTHY_MARKER",
    "HEALTH_DEADLINE_S",
    "MAX_UNHEALTHY_STARTS",
    "RESTART_EXIT_CODE",
    "ROOT_SEED",
    "STAGING_PREFIX",
    "STATE_FILE",
    "UPDATE_DIR",
    "VARIANT_FILE",
    "BootDecision",
    "InstallLayout",
    "Outcome",
    "Pending",
    "Pointer",
    "Result",
    "UpdateState",
    "Updater",
    "boot",
    "decide_boot",
    "default_install_root",
    "exec_argv",
    "host_target",
    "last_check",
    "last_check_summary",
    "load_state",
    "locate_install",
    "mark_healthy",
    "read_current",
    "restart_process",
    "rollback_now",
    "rolled_back",
    "running_executable",
    "save_state",
    "switch_current",
]

MIN_INTERVAL_S = 60
TICK_S = 60.0
GATE_HOLDER = "update"
GATE_POLL_S = 0.05
CATEGORY = "auto-update"
DEFAULT_UPDATE_REPOSITORY = "https://minis-gg.github.io/studio-worker/update/"
"""Where the release workflow publishes the update repository."""
REFERENCE_FEED_HOST = "api.github.com"
Report = Callable[[LogLevel, str, str], None]
"""`(level, category, message)`: the daemon's breadcrumbs (local log + shipped to studio)."""


# ---------------------------------------------------------------------------------------
# The updater


@dataclass(frozen=True)
class UpdateProgress:
    version: str
    done: int
    total: int


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
        atomic_write(trusted, seed.read_bytes())
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
            entry = {"at": iso_time(time.time()), **asdict(result)}
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
        fsync_tree(payload)
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
                fsync_dir(layout.root)
            state = load_state(layout.state_path)
            pending = Pending(version=version, previous=layout.version, switched_at=time.time())
            save_state(layout.state_path, replace(state, pending=pending))
            layout.switch(version)
        except BaseException:
            self._release_gate()
            raise
        if payload != staging:
            shutil.rmtree(staging, ignore_errors=True)
