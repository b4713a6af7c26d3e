"""Shared pieces of the `studio` CLI commands: options, the admin client call, output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import platformdirs

from studio_worker.studio.admin_client import AdminClient, AdminError, resolve_admin_token

DEFAULT_PORT = 9790
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"

F = TypeVar("F", bound=Callable[..., Any])


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("minis-studio"))


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_data_dir,
    show_default="platform user data dir of 'minis-studio'",
    help="Studio data directory (database, results/, admin-token).",
)


def client_options(fn: F) -> F:
    fn = click.option(
        "--admin-token",
        envvar="STUDIO_ADMIN_TOKEN",
        help="Admin token (default: read from <data dir>/admin-token).",
    )(fn)
    fn = data_dir_option(fn)
    fn = click.option(
        "--url", default=DEFAULT_URL, show_default=True, help="Base URL of the running studio."
    )(fn)
    return fn


def admin_client(url: str, data_dir: Path, admin_token: str | None) -> AdminClient:
    try:
        return AdminClient(url, resolve_admin_token(admin_token, data_dir))
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


def call(
    url: str, data_dir: Path, token: str | None, method: str, path: str, *, body: Any = None
) -> Any:
    with admin_client(url, data_dir, token) as client:
        try:
            return client.json(method, path, body)
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(rows: list[list[str]], header: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
