"""`studio-worker studio ...`: run a self-hosted studio and operate it over its admin API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import click

from studio_worker.studio.cli_support import (
    DEFAULT_PORT,
    call,
    client_options,
    data_dir_option,
    print_json,
    table,
)
from studio_worker.studio.job_commands import job, jobs, submit
from studio_worker.studio.server import StudioServer


@click.group("studio")
def studio_group() -> None:
    """Run a self-hosted studio and manage its workers and jobs."""


# ---- serve ------------------------------------------------------------------------


@studio_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port (0 = any free)."
)
@data_dir_option
@click.option("--admin-token", help="Use this admin token instead of <data dir>/admin-token.")
def serve(host: str, port: int, data_dir: Path, admin_token: str | None) -> None:
    """Serve the worker API, the worker WebSocket and the admin API on one port."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(_serve(host, port, data_dir, admin_token))
    except OSError as exc:
        raise click.ClickException(f"cannot start the studio: {exc}") from None
    except KeyboardInterrupt:
        pass


async def _serve(host: str, port: int, data_dir: Path, admin_token: str | None) -> None:
    server = StudioServer(data_dir, admin_token=admin_token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        url = await server.start(host, port)
        print(f"studio listening on {url}", flush=True)
        if not admin_token:
            click.echo(f"admin token: {data_dir / 'admin-token'}", err=True)
        await stop.wait()
    finally:
        await server.stop()


# ---- registration and workers -----------------------------------------------------


@studio_group.command("requests")
@client_options
@click.option("--all", "show_all", is_flag=True, help="Include approved and rejected requests.")
@click.option("--json", "as_json", is_flag=True, help="Print raw JSON.")
def requests_cmd(
    url: str, data_dir: Path, admin_token: str | None, show_all: bool, as_json: bool
) -> None:
    """List register requests (pending ones unless --all)."""
    path = "/admin/requests" if show_all else "/admin/requests?status=pending"
    data = call(url, data_dir, admin_token, "GET", path)
    if as_json:
        print_json(data)
        return
    rows = [
        [
            r["requestId"],
            r["status"],
            r["capabilities"].get("machineName", "?"),
            r["userAgent"],
            r["sourceIp"],
            r["createdAt"],
        ]
        for r in data
    ]
    table(rows, ["REQUEST", "STATUS", "MACHINE", "AGENT", "FROM", "CREATED"])


@studio_group.command("approve")
@click.argument("request_id")
@client_options
def approve(request_id: str, url: str, data_dir: Path, admin_token: str | None) -> None:
    """Approve a register request; the worker picks up its token on its next poll."""
    data = call(url, data_dir, admin_token, "POST", f"/admin/requests/{request_id}/approve")
    click.echo(f"approved {request_id} as worker {data['workerId']}")


@studio_group.command("reject")
@click.argument("request_id")
@click.option("--reason", default="", help="Reason shown to the worker's operator.")
@client_options
def reject(request_id: str, reason: str, url: str, data_dir: Path, admin_token: str | None) -> None:
    """Reject a register request."""
    call(
        url,
        data_dir,
        admin_token,
        "POST",
        f"/admin/requests/{request_id}/reject",
        body={"reason": reason},
    )
    click.echo(f"rejected {request_id}")


@studio_group.command("workers")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print raw JSON.")
def workers(url: str, data_dir: Path, admin_token: str | None, as_json: bool) -> None:
    """List approved workers, whether they are connected, and their current job."""
    data = call(url, data_dir, admin_token, "GET", "/admin/workers")
    if as_json:
        print_json(data)
        return
    rows = []
    for w in data:
        caps = w["capabilities"]
        rows.append(
            [
                w["workerId"],
                caps.get("machineName", "?"),
                "yes" if w["connected"] else "no",
                ",".join(caps.get("taskKinds", [])),
                str(caps.get("vramThresholdGb", "?")),
                w["currentJobId"] or "-",
                w["lastSeenAt"] or "-",
            ]
        )
    table(rows, ["WORKER", "MACHINE", "CONNECTED", "KINDS", "VRAM", "JOB", "LAST SEEN"])


@studio_group.command("revoke")
@click.argument("worker_id")
@client_options
def revoke(worker_id: str, url: str, data_dir: Path, admin_token: str | None) -> None:
    """Revoke every token of a worker and close its session (close 4001)."""
    call(url, data_dir, admin_token, "POST", f"/admin/workers/{worker_id}/revoke")
    click.echo(f"revoked the tokens of {worker_id}")


@studio_group.command("delete-worker")
@click.argument("worker_id")
@client_options
def delete_worker(worker_id: str, url: str, data_dir: Path, admin_token: str | None) -> None:
    """Delete a worker and close its session (close 4004)."""
    call(url, data_dir, admin_token, "DELETE", f"/admin/workers/{worker_id}")
    click.echo(f"deleted {worker_id}")


@studio_group.command("logs")
@click.argument("worker_id")
@click.option("--limit", default=200, show_default=True, help="Newest entries to show.")
@client_options
def logs(worker_id: str, limit: int, url: str, data_dir: Path, admin_token: str | None) -> None:
    """Show the log lines a worker shipped (logBatch)."""
    data = call(url, data_dir, admin_token, "GET", f"/admin/workers/{worker_id}/logs?limit={limit}")
    for e in data:
        job = f" [{e['jobId']}]" if e.get("jobId") else ""
        click.echo(f"{e['ts']} {e['level']:<5} {e['category']}{job}: {e['message']}")


for _command in (submit, jobs, job):
    studio_group.add_command(_command)
