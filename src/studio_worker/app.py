"""The one composition root: builds the worker from its parts and runs the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from studio_worker import __version__
from studio_worker.config.errors import ConfigError
from studio_worker.config.live import LiveConfig
from studio_worker.config.paths import default_config_path, state_file
from studio_worker.config.redact import SecretRedactor
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.roster import installed_engines
from studio_worker.engines.synthetic import SyntheticEngine
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.jobs.gate import JobGate
from studio_worker.jobs.journal import JobJournal
from studio_worker.localapi import LocalApi, LocalApiDeps, LogRing
from studio_worker.localapi.dashboard import dashboard_url
from studio_worker.models import DownloadProgress, ModelStore
from studio_worker.platform import memory, sysinfo, updater
from studio_worker.platform.lock import DaemonLock
from studio_worker.platform.telemetry import init_telemetry
from studio_worker.protocol.outcomes import AUTH_FAILED_HINT, EndKind
from studio_worker.registration.client import RegistrationClient
from studio_worker.results.uploader import UPLOAD_RETRY_PAUSE_S, ResultUploader
from studio_worker.session.attempt import Timing
from studio_worker.session.outbox import Outbox
from studio_worker.session.supervisor import ReconnectCapReached, SessionSupervisor
from studio_worker.status.logsetup import setup_logging
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue
from studio_worker.status.store import StatusStore

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_AUTH_FAILED = 2
EXIT_FATAL = 3
EXIT_RECONNECT_CAP = 4
CONFIG_POLL_S = 1.0
DEFAULT_REGISTRATION_TICK_S = 30.0
MIN_REGISTRATION_TICK_S = 0.1
REGISTRATION_POLL_ENV = "STUDIO_WORKER_REGISTRATION_POLL_SECS"


@dataclass
class DaemonTuning:
    """Clocks a test or the demo may shorten; the defaults are the contract's."""

    timing: Timing = field(default_factory=Timing)
    registration_tick_s: float = DEFAULT_REGISTRATION_TICK_S
    backoff_scale: float = 1.0
    upload_pause_s: float = UPLOAD_RETRY_PAUSE_S


def build_engines(models_root: Path) -> EngineRegistry:
    """The static roster (behaviour §6.1): real engines first, synthetic always last."""
    return EngineRegistry([*installed_engines(models_root), SyntheticEngine()])


class Daemon:
    """`studio-worker run`: registration gate, then the studio session, until stopped."""

    def __init__(
        self,
        config_path: Path,
        *,
        redactor: SecretRedactor | None = None,
        tuning: DaemonTuning | None = None,
        engines: EngineRegistry | None = None,
    ) -> None:
        self.config_path = config_path
        self.redactor = redactor or SecretRedactor()
        self.tuning = tuning or DaemonTuning()
        self._engines = engines
        self.store = ConfigStore(config_path, redactor=self.redactor)
        self.status = StatusStore()
        self.ship = ShipQueue()
        self.crumbs = Breadcrumbs(self.ship)
        self.log_ring = LogRing()
        self.log_ring.addFilter(self.redactor)
        self.local_api: LocalApi | None = None
        self.stop = asyncio.Event()
        self._vram = 0.0
        self._live: LiveConfig | None = None
        # Self-update: where this binary is installed (or why it is not), what to do at
        # boot about a version on trial, and the executable to become after a switch.
        self.install: updater.InstallLayout | str = "not located"
        self.boot: updater.BootDecision | None = None
        self.restart_into: Path | None = None

    @property
    def engines(self) -> EngineRegistry:
        assert self._engines is not None, "the daemon has not built its engines yet"
        return self._engines

    @property
    def live(self) -> LiveConfig:
        assert self._live is not None, "the daemon has not loaded its config yet"
        return self._live

    def capabilities(self) -> WorkerCapabilities:
        settings = self.live.current
        per_kind = self.engines.models_per_kind()
        return WorkerCapabilities(
            machine_name=sysinfo.machine_name(),
            username=sysinfo.username(),
            agent_version=__version__,
            engine="multi",
            vram_total_gb=self._vram,
            vram_threshold_gb=settings.vram_threshold_gb,
            auto_enabled=not self.status.paused,
            auto_start=settings.auto_start,
            auto_update=settings.auto_update_enabled,
            start_minimised=settings.start_minimised,
            only_when_idle=settings.only_when_idle,
            supported_models=self.engines.supported_models(),
            task_kinds=list(per_kind),
            supported_models_per_kind=per_kind,
        )

    async def run(self) -> int:
        try:
            settings = self.store.load()
        except ConfigError as exc:
            log.error("%s", exc)
            return EXIT_CONFIG
        lock = DaemonLock(
            state_file(self.config_path, "daemon.lock"), state_file(self.config_path, "daemon.pid")
        )
        if not lock.acquire():
            log.info(
                "another daemon is already running for this config", extra={"op": "daemon_lock"}
            )
            return EXIT_OK
        try:
            self.install = await asyncio.to_thread(updater.locate_install)
            if isinstance(self.install, updater.InstallLayout):
                self.boot = await asyncio.to_thread(updater.boot, self.install)
                if self.boot.action == "rollback" and self.boot.version is not None:
                    self.restart_into = self.install.executable(self.boot.version)
                    return EXIT_OK
            return await self._serve(settings)
        finally:
            lock.release()

    async def _serve(self, settings: Settings) -> int:
        self._live = LiveConfig(self.store, settings)
        if self._engines is None:
            self._engines = build_engines(settings.models_root)
        # Engine processes start with their first job: an idle worker holds none of them.
        try:
            return await self._serve_with_engines(settings)
        finally:
            await asyncio.to_thread(self.engines.close)

    async def _serve_with_engines(self, settings: Settings) -> int:
        self.status.set_paused(settings.paused)
        self._vram = await asyncio.to_thread(sysinfo.vram_total_gib)
        log.info(
            "studio-worker booting: version=%s variant=cpu config=%s api_base_url=%s "
            "threshold=%.1f models_root=%s worker=%s engines=%s",
            __version__,
            self.config_path,
            settings.api_base_url,
            settings.vram_threshold_gb,
            settings.models_root,
            settings.worker_id or "(unregistered)",
            ",".join(self.engines.names),
            extra={"op": "startup"},
        )
        journal = JobJournal(state_file(self.config_path, "jobs"), worker_id=self._worker_id)
        gate, outbox = JobGate(), Outbox(journal)
        async with httpx.AsyncClient() as http:
            models = ModelStore(settings.models_root, http=http, on_progress=self._download)
            dispatcher = Dispatcher(
                gate=gate,
                engines=self.engines,
                uploader=ResultUploader(http, pause_s=self.tuning.upload_pause_s),
                models=models,
                sink=outbox,
                status=self.status,
                crumbs=self.crumbs,
                link=self.live.link,
                only_when_idle=lambda: self.live.current.only_when_idle,
                journal=journal,
            )
            auto_update = updater.Updater(
                layout=self.install,
                settings=lambda: self.live.current,
                gate=gate,
                restart=self._restart_into,
                report=self.crumbs,
                boot_decision=self.boot,
            )
            registration = RegistrationClient(
                http=http,
                store=self.store,
                capabilities=self.capabilities,
                on_state=self.status.set_registration,
                tick_interval=self.tuning.registration_tick_s,
            )
            supervisor = SessionSupervisor(
                link=self.live.link,
                capabilities=self.capabilities,
                reconnect_cap=lambda: self.live.current.ws_reconnect_attempts or 0,
                dispatcher=dispatcher,
                outbox=outbox,
                status=self.status,
                crumbs=self.crumbs,
                ship=self.ship,
                timing=self.tuning.timing,
                backoff_scale=self.tuning.backoff_scale,
            )
            logging.getLogger().addHandler(self.log_ring)
            self.local_api = LocalApi(
                LocalApiDeps(
                    config_path=self.config_path,
                    store=self.store,
                    live=self.live,
                    status=self.status,
                    gate=gate,
                    engines=self.engines,
                    models=models,
                    ring=self.log_ring,
                    stop=self.stop,
                    reset_registration=registration.request_reset,
                    vram_total_gb=lambda: self._vram,
                    updater=auto_update,
                )
            )
            await self.local_api.start()
            self.redactor.register(self.local_api.token)  # generated per start when unset
            async with asyncio.TaskGroup() as group:
                jobs = group.create_task(dispatcher.run(), name="dispatcher")
                watch = group.create_task(self._watch_config(), name="config-watch")
                updates = group.create_task(auto_update.run(self.stop), name="auto-update")
                trim = group.create_task(memory.trim_loop(), name="trim")
                if isinstance(self.install, updater.InstallLayout):
                    # config loaded and engines started: this version is healthy
                    await asyncio.to_thread(updater.mark_healthy, self.install)
                try:
                    code = await self._studio_loops(registration, supervisor)
                finally:
                    self.stop.set()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.tuning.timing.shutdown_grace_s):
                            await dispatcher.wait_idle()
                    auto_update.stop()
                    await self.local_api.close()
                    logging.getLogger().removeHandler(self.log_ring)
                    jobs.cancel()
                    watch.cancel()
                    updates.cancel()
                    trim.cancel()
        return code

    def dashboard_url(self) -> str | None:
        """The dashboard with the token handed over in the URL fragment; None while the
        local API is not serving."""
        api = self.local_api
        if api is None or api.url is None:
            return None
        return dashboard_url(api.url, api.token)

    def _worker_id(self) -> str | None:
        link = self.live.link()
        return link.worker_id if link is not None else None

    def _restart_into(self, executable: Path) -> None:
        """The updater switched versions: stop gracefully, then become `executable`."""
        self.restart_into = executable
        self.stop.set()

    def _download(self, p: DownloadProgress) -> None:
        self.status.download_progress(
            p.model, p.filename, p.done, p.total, p.rate_bps, p.eta_s, p.finished
        )

    async def _studio_loops(
        self, registration: RegistrationClient, supervisor: SessionSupervisor
    ) -> int:
        creds = await registration.run(self.stop)
        if creds is None:
            return EXIT_OK
        try:
            end = await supervisor.run(self.stop)
        except ReconnectCapReached as exc:
            log.error("%s", exc)
            return EXIT_RECONNECT_CAP
        if end.kind is EndKind.AUTH_FAILED:
            log.error("ws auth failed: %s. %s", end.reason, AUTH_FAILED_HINT)
            return EXIT_AUTH_FAILED
        if end.kind is EndKind.FATAL:
            log.error("ws fatal: %s", end.reason)
            return EXIT_FATAL
        return EXIT_OK

    async def _watch_config(self) -> None:
        """Apply live edits: the pause flag now, everything else on the next heartbeat."""
        while True:
            settings = self.live.current
            if self.status.set_paused(settings.paused):
                log.info(
                    "claiming %s by operator",
                    "paused" if settings.paused else "resumed",
                    extra={"op": "control"},
                )
            await asyncio.sleep(CONFIG_POLL_S)


def registration_poll_s(env: Mapping[str, str]) -> float:
    """`STUDIO_WORKER_REGISTRATION_POLL_SECS` (ours): the approval poll, default 30 s."""
    raw = env.get(REGISTRATION_POLL_ENV, "").strip()
    if not raw:
        return DEFAULT_REGISTRATION_TICK_S
    try:
        value = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of seconds", REGISTRATION_POLL_ENV, raw)
        return DEFAULT_REGISTRATION_TICK_S
    return max(MIN_REGISTRATION_TICK_S, value)


def run_daemon(config_path: Path | None) -> int:
    """Entry of `studio-worker run`."""
    redactor = SecretRedactor()
    setup_logging(redactor)
    init_telemetry(redactor)  # opt-in: only with SENTRY_DSN
    tuning = DaemonTuning(registration_tick_s=registration_poll_s(os.environ))
    daemon = Daemon(config_path or default_config_path(), redactor=redactor, tuning=tuning)
    code = asyncio.run(_with_signals(daemon))
    if daemon.restart_into is not None:
        return updater.restart_process(daemon.restart_into)
    return code


async def _with_signals(daemon: Daemon) -> int:
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        log.info(
            "shutdown signal received; stopping worker gracefully",
            extra={"op": "shutdown", "already_stopping": stopping},
        )
        stopping = True
        daemon.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: Ctrl-C only
            loop.add_signal_handler(sig, on_signal)
    return await daemon.run()
