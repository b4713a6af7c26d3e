"""`studio-worker ui`: the daemon with a tray icon and notifications, and its login item.

`ui` runs the worker exactly as `run` does, plus a tray icon (Open dashboard, Pause /
Resume claiming, Quit) and desktop notifications (`studio_worker.desktop`, the `desktop`
extra). `ui --autostart on|off` saves `auto_start` and writes or removes the login item
that starts `ui` at login ("Run in tray on login"), then exits.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from studio_worker.config.paths import default_config_path


def _config_path(ctx: click.Context) -> Path:
    path = getattr(ctx.find_root().obj, "config_path", None)
    chosen = path if isinstance(path, Path) else default_config_path()
    return Path(os.path.abspath(chosen))


@click.command("ui")
@click.option(
    "--autostart",
    type=click.Choice(["on", "off"]),
    default=None,
    help='Turn "run in tray on login" on or off (saves auto_start and writes or removes '
    "the login item), then exit without starting the worker.",
)
@click.pass_context
def ui_cmd(ctx: click.Context, autostart: str | None) -> None:
    """Run the worker with a tray icon and desktop notifications.

    One process: the daemon (as `run`) plus a tray icon that shows its state (green idle,
    amber busy, blue paused, red refused or down) with Open dashboard, Pause/Resume
    claiming and Quit. Closing the dashboard's browser tab never stops the worker. With no
    display or no pystray it runs headless and says why.
    """
    config = _config_path(ctx)
    if autostart is None:
        from studio_worker.ui_app import run_ui

        raise SystemExit(run_ui(config))
    _set_autostart(ctx, config, autostart == "on")


def _set_autostart(ctx: click.Context, config: Path, enabled: bool) -> None:
    from studio_worker.config.store import ConfigStore
    from studio_worker.desktop import autostart as login
    from studio_worker.desktop.shell import login_argv
    from studio_worker.platform.services import ServiceError, ServiceHost

    ConfigStore(config).update(auto_start=enabled)
    try:
        host = ServiceHost.current()
        argv = login_argv(config) if enabled else None
        login.sync(host, argv)
        where = login.entry_path(host) or f"HKCU\\{login.RUN_KEY}\\{login.RUN_VALUE}"
    except (login.AutostartError, ServiceError) as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(1)
        return
    if argv is None:
        click.echo(f"run in tray on login: off (removed {where})")
    else:
        click.echo(f"run in tray on login: on ({where} runs `{' '.join(argv)}`)")
