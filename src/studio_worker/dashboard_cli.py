"""`studio-worker dashboard`: open the running worker's web dashboard in a browser.

The daemon's local API serves the dashboard; its address and token are in the discovery
file next to the config (`local-api.json`, owner-only). The token rides once in the URL
fragment (docs/localapi.md), so the address printed by `--print-url` is a credential.
"""

from __future__ import annotations

import webbrowser
from typing import NoReturn

import click
import httpx

from studio_worker.localapi.dashboard import dashboard_url
from studio_worker.update_cli import config_path_of, daemon_address

NOT_RUNNING = (
    "no running worker answers here: start it with `studio-worker run` "
    "(or `studio-worker ui` for the tray), then open the dashboard again"
)


def _fail(ctx: click.Context) -> NoReturn:
    click.echo(f"error: {NOT_RUNNING}", err=True)
    ctx.exit(1)


@click.command("dashboard")
@click.option(
    "--print-url",
    is_flag=True,
    help="Print the address instead of opening a browser (it carries the local API token).",
)
@click.pass_context
def dashboard_cmd(ctx: click.Context, print_url: bool) -> None:
    """Open the running worker's dashboard (status, jobs, models, config, logs)."""
    found = daemon_address(config_path_of(ctx))
    if found is None:
        _fail(ctx)
    api_url, token = found
    try:
        httpx.get(f"{api_url}/healthz", timeout=3.0).raise_for_status()
    except httpx.HTTPError:
        _fail(ctx)
    url = dashboard_url(api_url, token)
    if print_url:
        click.echo(url)
        return
    if not webbrowser.open(url):
        click.echo(f"no browser could be started here; open this address: {url}")
        return
    click.echo(f"dashboard opened ({api_url})")
