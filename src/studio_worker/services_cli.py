"""`studio-worker install-service` / `uninstall-service`: the daemon as a per-user service.

A systemd `--user` unit on Linux, a LaunchAgent on macOS, a logon task on Windows (see
`studio_worker.platform.services`, imported inside the commands so other commands start
without it). The service runs this executable with the active config (`--config` is
always written out) and starts at login; `--dry-run` prints the files and commands
instead of touching anything.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from studio_worker.config.paths import default_config_path

if TYPE_CHECKING:
    from studio_worker.platform.services import Runner, ServiceHost, Step


def _runner() -> Runner:
    """The command runner (tests replace this function)."""
    from studio_worker.platform.services import subprocess_runner

    return subprocess_runner


def _host() -> ServiceHost:
    """This machine and user (tests replace this function)."""
    from studio_worker.platform.services import ServiceHost

    return ServiceHost.current()


def _config_path(ctx: click.Context) -> Path:
    path = getattr(ctx.find_root().obj, "config_path", None)
    chosen = path if isinstance(path, Path) else default_config_path()
    return Path(os.path.abspath(chosen))


def _is_compiled() -> bool:
    """True in a standalone build (Nuitka sets `__compiled__` in compiled modules)."""
    return "__compiled__" in globals() or bool(getattr(sys, "frozen", False))


def _fail(ctx: click.Context, message: str) -> None:
    click.echo(f"error: {message}", err=True)
    ctx.exit(1)


def _print_plan(steps: list[Step]) -> None:
    from studio_worker.platform.services import WriteFile

    for step in steps:
        if isinstance(step, WriteFile):
            data = step.data
            text = data.decode("utf-16") if data.startswith(b"\xff\xfe") else data.decode()
            click.echo(f"would write {step.path}:")
            for line in text.splitlines():
                click.echo(f"    {line}".rstrip())
        else:
            click.echo(f"would {step.describe()}")


@click.command("install-service")
@click.option("--dry-run", is_flag=True, help="Print the files and commands; change nothing.")
@click.option(
    "--exe",
    "exe_option",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="The studio-worker executable the service runs (default: this one, by its "
    "PATH entry when that is the same file).",
)
@click.pass_context
def install_service_cmd(ctx: click.Context, dry_run: bool, exe_option: Path | None) -> None:
    """Run the worker as a per-user service that starts at login (no root/admin).

    Linux: a systemd --user unit; macOS: a LaunchAgent; Windows: a scheduled task at
    logon. Rerunning refreshes it and restarts the worker on the current executable.
    """
    from studio_worker.platform import services

    config = _config_path(ctx)
    runner = _runner()
    try:
        host = _host()
        kind = host.kind
        launcher: tuple[str, ...] = ()
        if exe_option is not None:
            exe = Path(os.path.abspath(exe_option))
        else:
            exe, launcher = services.locate_executable(
                argv0=sys.argv[0],
                executable=sys.executable,
                compiled=_is_compiled(),
                which=shutil.which,
                windows=kind == "task",
            )
        legacy_task = kind == "task" and services.task_present(services.LEGACY_TASK_NAME, runner)
        steps = services.install_plan(
            host, exe, config, launcher_args=launcher, legacy_task_present=legacy_task
        )
        if dry_run:
            _print_plan(steps)
            return
        services.preflight(host, runner)
        services.apply(steps, runner)
    except services.ServiceError as exc:
        _fail(ctx, str(exc))
        return
    target = services.service_file(host, config)
    command = " ".join(services.daemon_argv(exe, config, launcher))
    if kind == "systemd":
        click.echo(f"installed the systemd user service {services.SYSTEMD_UNIT_NAME} ({target})")
        click.echo(f"it runs `{command}` now and at every login")
        click.echo(f"logs: journalctl --user -u {services.SERVICE_NAME}")
        click.echo(
            "to keep it running while you are logged out: loginctl enable-linger "
            f"{host.env.get('USER', '$USER')}"
        )
    elif kind == "launchd":
        click.echo(f"installed the LaunchAgent {services.LAUNCHD_LABEL} ({target})")
        click.echo(f"it runs `{command}` now and at every login")
        click.echo(f"logs: {host.launchd_log_file()}")
    else:
        click.echo(f"installed the scheduled task {services.TASK_NAME}")
        click.echo(f"it runs `{command}` now and at every logon")
    click.echo("`studio-worker status` shows its registration; `uninstall-service` removes it")


@click.command("uninstall-service")
@click.option("--dry-run", is_flag=True, help="Print the files and commands; change nothing.")
@click.pass_context
def uninstall_service_cmd(ctx: click.Context, dry_run: bool) -> None:
    """Stop and remove the service `install-service` set up (config and models stay)."""
    from studio_worker.platform import services

    config = _config_path(ctx)
    runner = _runner()
    try:
        host = _host()
        present = host.kind == "task" and services.task_present(services.TASK_NAME, runner)
        steps = services.uninstall_plan(host, config, task_present=present)
        if not steps:
            click.echo("no studio-worker service is installed")
            return
        if dry_run:
            _print_plan(steps)
            return
        services.apply(steps, runner)
    except services.ServiceError as exc:
        _fail(ctx, str(exc))
        return
    click.echo("removed the studio-worker service: the worker no longer starts at login")
