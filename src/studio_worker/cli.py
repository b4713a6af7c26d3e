"""`studio-worker` command line (behaviour §3): parse, delegate, print.

Config edits go through `ConfigStore`; the daemon lives in `app`, the demo in `demo`.
Start-up cost matters (`--version` is the start-time benchmark, and every service start
pays it): this module imports only click at load; configuration (pydantic), the daemon and
the command groups of other modules are imported when their command runs (`LAZY_COMMANDS`).
Errors the operator can fix print one `error: …` line on stderr and exit 1, without a
traceback.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from studio_worker import AGENT_NAME, __version__

if TYPE_CHECKING:
    from studio_worker.config.settings import Settings
    from studio_worker.config.store import ConfigStore

log = logging.getLogger(__name__)

BUILD_VARIANT = "cpu"


def _build_variant() -> str:
    """cpu/cuda/metal from the `.variant` file next to a built binary (build/build.py)."""
    if "__compiled__" not in globals() and not getattr(sys, "frozen", False):
        return BUILD_VARIANT
    try:
        recorded = (Path(sys.executable).resolve().parent / ".variant").read_text().strip()
    except OSError:
        return BUILD_VARIANT
    return recorded if recorded in {"cpu", "cuda", "metal"} else BUILD_VARIANT


AUTO_REGISTER_HINT = "run `studio-worker run` or `studio-worker ui` to auto-register"
PAUSED_MESSAGE = "claiming paused: the worker rejects new offers until `studio-worker enable`"


class CommandError(Exception):
    """A command's own refusal (bad argument value), printed as `error: …`."""


@dataclass(frozen=True)
class _Obj:
    config_path: Path

    @property
    def store(self) -> ConfigStore:
        from studio_worker.config.store import ConfigStore

        return ConfigStore(self.config_path)


# Commands defined in other modules: name -> "module:attribute", imported on first use.
LAZY_COMMANDS: dict[str, str] = {
    "studio": "studio_worker.studio.commands:studio_group",
    "models": "studio_worker.models_cli:models_group",
    "install-service": "studio_worker.services_cli:install_service_cmd",
    "uninstall-service": "studio_worker.services_cli:uninstall_service_cmd",
    "check-update": "studio_worker.update_cli:check_update_cmd",
    "dashboard": "studio_worker.dashboard_cli:dashboard_cmd",
    "update": "studio_worker.update_cli:update_cmd",
    "ui": "studio_worker.ui_cli:ui_cmd",
}


def _operator_errors() -> tuple[type[Exception], ...]:
    from studio_worker.config.errors import ConfigError
    from studio_worker.protocol.urls import BaseUrlError

    return (ConfigError, BaseUrlError, CommandError)


class _Cli(click.Group):
    """Loads `LAZY_COMMANDS` on demand and turns the errors an operator can act on into one
    line instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), target
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            click.echo(f"error: {exc.strerror or exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            if not isinstance(exc, _operator_errors()):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


pass_obj = click.make_pass_decorator(_Obj)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Config file to use instead of the per-user default "
    "(every other state file lives next to it).",
)
@click.version_option(
    __version__, prog_name=AGENT_NAME, message=f"%(prog)s %(version)s ({_build_variant()})"
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """A generation worker for the minis.gg studio and self-hosted studios."""
    from studio_worker.config.paths import default_config_path

    path = config_path.expanduser() if config_path is not None else default_config_path()
    ctx.obj = _Obj(path)


@cli.command("run")
@pass_obj
def run_cmd(obj: _Obj) -> None:
    """Run the worker daemon: register, connect to the studio and take jobs."""
    from studio_worker.app import run_daemon

    raise SystemExit(run_daemon(obj.config_path))


@cli.command("demo")
@click.option(
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the five outputs (default: ./demo-output).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the demo studio's data folder (SQLite, uploads, worker config) afterwards.",
)
def demo_cmd(output_dir: Path | None, keep: bool) -> None:
    """Run a local studio and this worker end to end on synthetic jobs."""
    from studio_worker.demo import run_demo

    raise SystemExit(run_demo(output_dir, keep))


@cli.command("register")
@click.option("--api-base-url", "api_base_url", metavar="URL", help="Studio root URL to use.")
@click.option(
    "--reset",
    is_flag=True,
    help="Forget the worker id, token, pending request and install id.",
)
@pass_obj
def register_cmd(obj: _Obj, api_base_url: str | None, reset: bool) -> None:
    """Prepare registration (no network): the daemon asks the studio on its next start."""
    from studio_worker.protocol.registration import Credentials
    from studio_worker.protocol.urls import normalise

    store = obj.store
    settings = store.load()
    if reset:
        settings = settings.with_credentials(Credentials())
    if api_base_url is not None:
        normalise(api_base_url)  # refuse a URL the daemon could not use
        settings = settings.replace(api_base_url=api_base_url)
    store.save(settings)
    if reset:
        click.echo(f"local registration state cleared; {AUTO_REGISTER_HINT}")
    if api_base_url is not None or not reset:
        click.echo(f"saved; {AUTO_REGISTER_HINT} against {settings.api_base_url}")


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of lines.")
@pass_obj
def status_cmd(obj: _Obj, as_json: bool) -> None:
    """Show the configuration and registration state (never secrets)."""
    from studio_worker.update_cli import status_fields

    settings = obj.store.load()
    update_line, update_object = status_fields()
    if as_json:
        body = {**_status_object(obj.config_path, settings), "update": update_object}
        click.echo(json.dumps(body, indent=2))
        return
    lines = [
        ("config path", str(obj.config_path)),
        ("api_base_url", settings.api_base_url),
        ("registration", _registration_line(settings)),
        ("vram_threshold_gb", _fmt_gb(settings.vram_threshold_gb)),
        ("models_root", str(settings.models_root)),
        ("auto_update", _fmt_bool(settings.auto_update_enabled)),
        ("update_interval", f"{settings.auto_update_interval_secs}s"),
        ("last_update_check", update_line),
        ("claiming", "paused" if settings.paused else "enabled"),
    ]
    for key, value in lines:
        click.echo(f"{key}: {value}")


@cli.command("enable")
@pass_obj
def enable_cmd(obj: _Obj) -> None:
    """Resume claiming studio jobs (a running daemon picks this up live)."""
    obj.store.update(paused=False)
    log.info("claiming enabled", extra={"op": "enable"})
    click.echo("claiming enabled")


@cli.command("disable")
@pass_obj
def disable_cmd(obj: _Obj) -> None:
    """Pause claiming: the worker stays connected but rejects new offers."""
    obj.store.update(paused=True)
    log.info("claiming paused", extra={"op": "disable"})
    click.echo(PAUSED_MESSAGE)


@cli.command("set-threshold", context_settings={"ignore_unknown_options": True})
@click.argument("gb", type=float)
@pass_obj
def set_threshold_cmd(obj: _Obj, gb: float) -> None:
    """Set the most VRAM (GB) a studio job may need (vram_threshold_gb)."""
    if not gb >= 0 or math.isinf(gb):
        raise CommandError("threshold must be >= 0")
    obj.store.update(vram_threshold_gb=gb)
    log.info("threshold saved", extra={"op": "set_threshold", "vram_threshold_gb": gb})
    click.echo(f"vram_threshold_gb = {_fmt_gb(gb)}")


@cli.command("config")
@click.option("--show-secrets", is_flag=True, help="Print tokens and secrets as they are.")
@pass_obj
def config_cmd(obj: _Obj, show_secrets: bool) -> None:
    """Print the config file path and its settings (secrets redacted)."""
    import tomli_w

    from studio_worker.config.redact import redacted

    settings = obj.store.load()
    table = settings.to_toml_dict() if show_secrets else redacted(settings)
    click.echo(f"# {obj.config_path}")
    click.echo(tomli_w.dumps(table), nl=False)


def _registration_line(settings: Settings) -> str:
    from studio_worker.protocol.registration import RegistrationMachine, RegState

    state = RegistrationMachine(settings.credentials()).state
    if state is RegState.APPROVED:
        return f"approved as {settings.worker_id}"
    if state is RegState.PENDING:
        return f"pending operator approval (request {settings.registration_request_id})"
    return "not registered (will auto-register on next launch)"


def _status_object(config_path: Path, settings: Settings) -> dict[str, Any]:
    from studio_worker.protocol.registration import RegistrationMachine, RegState

    state = RegistrationMachine(settings.credentials()).state
    registration: dict[str, Any] = {"state": state.value}
    if state is RegState.APPROVED:
        registration["worker_id"] = settings.worker_id
    elif state is RegState.PENDING:
        registration["request_id"] = settings.registration_request_id
    return {
        "config_path": str(config_path),
        "api_base_url": settings.api_base_url,
        "registration": registration,
        "vram_threshold_gb": settings.vram_threshold_gb,
        "models_root": str(settings.models_root),
        "auto_update": settings.auto_update_enabled,
        "update_interval_secs": settings.auto_update_interval_secs,
        "claiming": "paused" if settings.paused else "enabled",
    }


def _fmt_gb(gb: float) -> str:
    """`12`, `7.5`: how the reference prints a float."""
    return str(int(gb)) if gb.is_integer() else repr(gb)


def _fmt_bool(value: bool) -> str:
    return "true" if value else "false"


def main() -> None:
    """Console-script entry point (`studio-worker`)."""
    cli(prog_name=AGENT_NAME)
