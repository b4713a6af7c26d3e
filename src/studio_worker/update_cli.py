"""`studio-worker check-update` and `studio-worker update` (docs/update.md), and the
self-update lines of `studio-worker status`.

When a daemon runs for this config, both commands go through its local API
(`local-api.json` next to the config): the daemon holds the one-job slot, so only it can
tell whether it is idle and install between two jobs. Without a daemon they run the same
updater in this process (`update` then holds the daemon lock, so no daemon starts while
it switches versions; the new version runs from the next start).

Exit status: 0 when the check or install did what was asked (`up to date`, `update
available`, `update installed`, a version skipped on purpose), 1 otherwise (refused,
failed, self-update off, a job running).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from studio_worker.config.paths import default_config_path, state_file
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.jobs.gate import JobGate
from studio_worker.platform import updater as up
from studio_worker.platform.lock import DaemonLock

DISCOVERY_FILE = "local-api.json"  # localapi.server.DISCOVERY_FILE
CHECK_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 3600.0  # a large download on a slow line


@dataclass(frozen=True)
class Answer:
    """What a command prints and how it exits."""

    ok: bool
    message: str
    body: dict[str, Any]


class NoDaemon(Exception):
    """No daemon answers on the discovery file's URL (none runs, or a stale file)."""


def config_path_of(ctx: click.Context) -> Path:
    path = getattr(ctx.find_root().obj, "config_path", None)
    return path if isinstance(path, Path) else default_config_path()


def daemon_address(config_path: Path) -> tuple[str, str] | None:
    """(url, token) from the running daemon's discovery file, if there is one."""
    try:
        found = json.loads(state_file(config_path, DISCOVERY_FILE).read_text(encoding="utf-8"))
        url, token = found["url"], found["token"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not isinstance(token, str):
        return None
    return url, token


def via_daemon(config_path: Path, action: str, *, wait: bool = False) -> Answer:
    """POST /daemon/update/<action> on the running daemon; NoDaemon when none answers."""
    found = daemon_address(config_path)
    if found is None:
        raise NoDaemon
    url, token = found
    timeout = INSTALL_TIMEOUT_S if action == "install" else CHECK_TIMEOUT_S
    try:
        response = httpx.post(
            f"{url}/daemon/update/{action}",
            headers={"Authorization": f"Bearer {token}"},
            json={"waitForJob": True} if wait else {},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )
    except httpx.ConnectError:
        raise NoDaemon from None
    except httpx.HTTPError as exc:
        return Answer(False, f"the running daemon did not answer: {exc}", {})
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.status_code != 200:
        message = body.get("message") or f"the daemon answered HTTP {response.status_code}"
        return Answer(False, str(message), body)
    outcome = body.get("outcome")
    message = str(body.get("message", ""))
    if outcome == "installed":
        message += "; the daemon is restarting into it"
    return Answer(outcome in ("up-to-date", "available", "installed", "skipped"), message, body)


def in_process(settings: Settings, action: str, *, config_path: Path) -> Answer:
    """The updater in this process: no daemon runs for this config."""
    layout = up.locate_install()
    restarts: list[Path] = []
    updater = up.Updater(
        layout=layout,
        settings=lambda: settings,
        gate=JobGate(),
        restart=restarts.append,
        report=lambda level, category, message: None,  # the result line says it
    )
    if action == "check":
        result = asyncio.run(updater.check_now())
        return Answer(result.ok, result.describe(), result.to_json())
    lock = DaemonLock(state_file(config_path, "daemon.lock"), state_file(config_path, "daemon.pid"))
    if not lock.acquire():
        return Answer(
            False,
            "not now: a daemon runs for this config but its local API does not answer"
            f" ({state_file(config_path, DISCOVERY_FILE)}); it updates itself between jobs",
            {},
        )
    try:
        result = asyncio.run(updater.update_now())
    finally:
        lock.release()
    message = result.describe()
    if result.outcome == "installed":
        message += "; it runs from the next start"
    return Answer(result.ok, message, result.to_json())


def _run(ctx: click.Context, action: str, *, wait: bool = False) -> Answer:
    config_path = config_path_of(ctx)
    try:
        return via_daemon(config_path, action, wait=wait)
    except NoDaemon:
        pass
    settings = ConfigStore(config_path).load()
    return in_process(settings, action, config_path=config_path)


def _finish(answer: Answer, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"ok": answer.ok, **answer.body, "message": answer.message}))
    else:
        click.echo(answer.message, err=not answer.ok)
    if not answer.ok:
        raise SystemExit(1)


@click.command("check-update")
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
@click.pass_context
def check_update_cmd(ctx: click.Context, as_json: bool) -> None:
    """Ask the update repository whether a newer version exists (never installs)."""
    _finish(_run(ctx, "check"), as_json)


@click.command("update")
@click.option(
    "--wait",
    is_flag=True,
    help="When a job is running, install right after it instead of refusing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
@click.pass_context
def update_cmd(ctx: click.Context, wait: bool, as_json: bool) -> None:
    """Install the newest version now if the worker is idle (else say why not)."""
    _finish(_run(ctx, "install", wait=wait), as_json)


# -- `studio-worker status` -----------------------------------------------------------------


def status_fields(executable: Path | None = None) -> tuple[str, dict[str, Any]]:
    """(`last_update_check` line, `update` object) for `studio-worker status [--json]`."""
    layout = up.locate_install(executable)
    if isinstance(layout, str):
        off = f"self-update is off for this install: {layout}"
        return off, {"whyOff": off, "lastCheck": None}
    found = up.last_check(layout)
    if found is None:
        return "never", {"whyOff": None, "current": layout.version, "lastCheck": None}
    at, result = found
    return f"{at}: {result.describe()}", {
        "whyOff": None,
        "current": layout.version,
        "lastCheck": {"at": at, **result.to_json()},
    }
