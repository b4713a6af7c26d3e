"""The registration gate: drives `RegistrationMachine` over HTTP (protocol §2.1-§2.2, §6).

One HTTP call per tick; ticks run at once and then every `tick_interval` seconds. Every
credential change is saved through the `ConfigStore` before the next call. The raw
registration secret only ever leaves in the poll's `Authorization` header; the
register-request carries its SHA-256.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from studio_worker import user_agent
from studio_worker.config.errors import ConfigError
from studio_worker.config.store import ConfigStore
from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.protocol.registration import (
    REJECTED_MESSAGE,
    Credentials,
    PollRequest,
    PostRequest,
    RegistrationMachine,
    RegState,
    format_install_id,
)
from studio_worker.protocol.urls import register_poll_url, register_request_url

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 30.0
REQUEST_TIMEOUT_S = 60.0
SECRET_BYTES = 32
ERROR_BODY_MAX_CHARS = 300
STOPPED_MESSAGE = "stopped before registration completed; exiting cleanly"
STALE_REQUEST_MESSAGE = "register request not found (stale id; orchestrator will recreate)"

_DECIDED = frozenset({RegState.APPROVED, RegState.REJECTED})

StateCallback = Callable[[dict[str, str]], None]


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RegistrationClient:
    """Runs the registration gate until approval, a stop, or forever while rejected.

    `capabilities` is called before every register-request (VRAM, models may change);
    the client sends it with `autoEnabled: true` and no `userPresence`, as upstream.
    `on_state` receives the tagged object of protocol §4.6 whenever it changes.
    `request_reset` must be called on the event loop's thread.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        store: ConfigStore,
        capabilities: Callable[[], WorkerCapabilities],
        on_state: StateCallback | None = None,
        tick_interval: float = TICK_INTERVAL_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        clock: Callable[[], str] = _now_rfc3339,
    ) -> None:
        self._http = http
        self._store = store
        self._capabilities = capabilities
        self._on_state = on_state
        self._tick_interval = tick_interval
        self._timeout = httpx.Timeout(request_timeout)
        self._random_bytes = random_bytes
        self._clock = clock
        self._reset = asyncio.Event()
        self._machine: RegistrationMachine | None = None
        self._last_snapshot: dict[str, str] | None = None

    @property
    def state(self) -> RegState | None:
        """None until `run` has loaded the config."""
        return None if self._machine is None else self._machine.state

    def snapshot(self) -> dict[str, str]:
        return {"state": "pristine"} if self._machine is None else self._machine.snapshot()

    def request_reset(self) -> bool:
        """Ask a rejected gate to start over; False (nothing done) when not rejected."""
        if self.state is not RegState.REJECTED:
            return False
        self._reset.set()
        return True

    async def run(self, stop: asyncio.Event) -> Credentials | None:
        """Approved credentials, or None when `stop` is set first."""
        settings = self._store.load()
        base_url = settings.api_base_url
        machine = RegistrationMachine(settings.credentials())
        self._machine = machine
        self._emit()
        while True:
            if machine.state is RegState.APPROVED:
                return machine.creds
            if stop.is_set():
                log.info(STOPPED_MESSAGE)
                return None
            if machine.state is RegState.REJECTED:
                if not await self._wait_for_reset(machine, stop):
                    log.info(STOPPED_MESSAGE)
                    return None
                continue
            if not await self._tick_unless_stopped(machine, base_url, stop):
                log.info(STOPPED_MESSAGE)
                return None
            self._emit()
            if self.state in _DECIDED:
                continue  # no wait: return the credentials / log the rejection now
            await _wait_any((stop,), self._tick_interval)

    async def _wait_for_reset(self, machine: RegistrationMachine, stop: asyncio.Event) -> bool:
        """Log the rejection and wait; True after a reset (state saved), False on stop."""
        log.error(REJECTED_MESSAGE.format(reason=machine.reason))
        self._reset.clear()
        await _wait_any((stop, self._reset), None)
        if stop.is_set():
            return False
        self._reset.clear()
        machine.reset()
        self._persist(machine.creds)
        log.info("registration reset; submitting a fresh request")
        self._emit()
        return True

    async def _tick_unless_stopped(
        self, machine: RegistrationMachine, base_url: str, stop: asyncio.Event
    ) -> bool:
        """Run one tick; a stop cancels an HTTP call in flight (False then)."""
        tick = asyncio.ensure_future(self._tick(machine, base_url))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((tick, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not tick.done():
                tick.cancel()
            await asyncio.gather(tick, stopper, return_exceptions=True)
        if tick.cancelled():
            return False
        tick.result()  # re-raise anything unexpected
        return True

    async def _tick(self, machine: RegistrationMachine, base_url: str) -> None:
        new_id = format_install_id(self._random_bytes(16))
        new_secret = self._random_bytes(SECRET_BYTES).hex()
        if machine.prepare(new_id, new_secret):
            self._persist(machine.creds)
        call = machine.next_call()
        if isinstance(call, PostRequest):
            await self._post(machine, base_url, call)
        elif isinstance(call, PollRequest):
            await self._poll(machine, base_url, call)

    async def _post(self, machine: RegistrationMachine, base_url: str, call: PostRequest) -> None:
        caps = self._capabilities().model_copy(update={"auto_enabled": True, "user_presence": None})
        body = {
            "installId": call.install_id,
            "registrationSecretHash": call.secret_hash,
            "capabilities": caps.to_wire(),
            "userAgent": user_agent(),
        }
        url = register_request_url(base_url)
        response = await self._send("register-request", "POST", url, json=body)
        if response is None or not response.is_success:
            return  # stay Pristine; the next tick tries again
        request_id = _json_field(response, "requestId")
        if request_id is None:
            log.warning("register-request failed: the studio answered without a requestId")
            return
        machine.post_succeeded(request_id, self._clock())
        self._persist(machine.creds)
        log.info("registration requested; waiting for operator approval (request %s)", request_id)

    async def _poll(self, machine: RegistrationMachine, base_url: str, call: PollRequest) -> None:
        url = register_poll_url(base_url, call.request_id)
        headers = {"Authorization": f"Bearer {call.secret}"}
        response = await self._send("register-poll", "GET", url, headers=headers)
        before = machine.creds
        if response is None:
            machine.poll_answered(0, None, self._clock())  # transport error: stay Pending
            return
        if response.status_code == 404:
            log.debug(STALE_REQUEST_MESSAGE)
        machine.poll_answered(response.status_code, _json_or_none(response), self._clock())
        if machine.creds == before:
            return
        approved = machine.state is RegState.APPROVED
        if approved:
            log.info("registration approved as %s", machine.creds.worker_id)
        self._persist(machine.creds, approved=approved)

    async def _send(
        self,
        op: str,
        method: str,
        url: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """One studio call, logged as protocol §2 says; None on a transport error."""
        fields: dict[str, Any] = {"op": op, "endpoint": url}
        started = time.monotonic()
        try:
            response = await self._http.request(
                method, url, json=json, headers=headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            fields["elapsed_ms"] = round((time.monotonic() - started) * 1000)
            log.warning("%s failed: %s", op, _describe(exc), extra=fields)
            return None
        fields["status"] = response.status_code
        fields["elapsed_ms"] = round((time.monotonic() - started) * 1000)
        if response.is_success:
            log.debug("%s ok", op, extra=fields)
        else:
            status_line = f"{response.status_code} {response.reason_phrase}".rstrip()
            text = response.text[:ERROR_BODY_MAX_CHARS]
            log.warning("%s failed: %s — %s", op, status_line, text, extra=fields)
        return response

    def _persist(self, creds: Credentials, *, approved: bool = False) -> None:
        try:
            self._store.modify(lambda settings: settings.with_credentials(creds))
        except ConfigError as exc:
            if approved:
                log.error(
                    "approved credentials could not be saved (%s); the worker will "
                    "re-register after a restart",
                    exc,
                )
            else:
                log.warning("registration state could not be saved: %s", exc)

    def _emit(self) -> None:
        snap = self.snapshot()
        if snap != self._last_snapshot:
            self._last_snapshot = snap
            if self._on_state is not None:
                self._on_state(dict(snap))


async def _wait_any(events: tuple[asyncio.Event, ...], limit_s: float | None) -> None:
    """Return when any event is set or `limit_s` seconds pass (None: no limit)."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json_field(response: httpx.Response, key: str) -> str | None:
    body = _json_or_none(response)
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def _describe(exc: httpx.HTTPError) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
