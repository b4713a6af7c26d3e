"""`studio-worker demo`: a self-hosted studio and a fresh worker, one job of every kind.

Everything runs in this process on loopback: the studio (SQLite in a temporary folder),
a worker with its own fresh config, the operator's approval, five jobs, their outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.config.redact import SecretRedactor
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.status.logsetup import setup_logging
from studio_worker.studio.records import JobRecord
from studio_worker.studio.server import StudioServer

JOB_TIMEOUT_S = 60.0
APPROVAL_TIMEOUT_S = 30.0

# One job of every kind, all on the synthetic engine (real engines: see docs/engines.md).
DEMO_JOBS: list[tuple[str, dict[str, Any]]] = [
    ("image", {"prompt": "a lantern glowing blue in a misty forest", "ext": "webp"}),
    (
        "llm",
        {
            "system": "Answer in one sentence.",
            "messages": [{"role": "user", "content": "Name three dragons."}],
        },
    ),
    ("audio_stt", {"inputUrl": "https://assets.example/demo/hello.wav", "language": "en"}),
    ("audio_tts", {"text": "Hello from your studio worker.", "ext": "wav"}),
    (
        "video",
        {
            "prompt": "a fox running through snow",
            "seconds": 2,
            "fps": 8,
            "width": 256,
            "height": 256,
            "ext": "mp4",
        },
    ),
]


@dataclass
class Row:
    kind: str
    model: str
    engine: str
    status: str
    ms: int
    output: str


def run_demo(output_dir: Path | None, keep: bool) -> int:
    setup_logging(SecretRedactor(), level=logging.WARNING)
    target = (output_dir or Path("demo-output")).resolve()
    target.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(target, keep))


async def _demo(output_dir: Path, keep: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="studio-worker-demo-"))
    studio = StudioServer(work / "studio")
    base_url = await studio.start()
    click.echo(f"self-hosted studio listening on {base_url} (data in {work / 'studio'})")
    config = work / "worker" / "config.toml"
    ConfigStore(config).save(
        Settings(api_base_url=base_url, models_root=work / "models", auto_update_enabled=False)
    )
    daemon = Daemon(config, tuning=DaemonTuning(registration_tick_s=0.5))
    worker = asyncio.create_task(daemon.run(), name="worker")
    try:
        await _approve(studio)
        rows = await _run_jobs(studio, output_dir)
    finally:
        daemon.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 10)
        await studio.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    _print_table(rows)
    ok = all(row.status == "done" for row in rows)
    click.echo(
        f"\n{sum(r.status == 'done' for r in rows)}/{len(rows)} jobs completed; "
        f"outputs in {output_dir}"
    )
    return 0 if ok else 1


async def _approve(studio: StudioServer) -> None:
    click.echo("worker registering; waiting for its request…")
    deadline = time.monotonic() + APPROVAL_TIMEOUT_S
    while not (pending := studio.pending_requests()):
        if time.monotonic() > deadline:
            raise click.ClickException("the worker never asked to register")
        await asyncio.sleep(0.1)
    worker_id = studio.approve(pending[0].id)
    click.echo(f"operator approved request {pending[0].id} as worker {worker_id}")


async def _run_jobs(studio: StudioServer, output_dir: Path) -> list[Row]:
    submitted = []
    for kind, task in DEMO_JOBS:
        started = time.monotonic()
        job_id = studio.submit_job(
            kind, task, f"synthetic-{_short(kind)}", asset_name=f"demo/{kind}"
        )
        submitted.append((kind, job_id, started))
    rows = []
    for kind, job_id, started in submitted:
        try:
            job = await studio.wait_for_job(job_id, JOB_TIMEOUT_S)
        except TimeoutError:
            rows.append(Row(kind, "?", "synthetic", "timed out", _ms(started), "-"))
            continue
        rows.append(
            Row(
                kind,
                job.model,
                str(job.model_source.get("engine")),
                job.status,
                _ms(started),
                _write_output(job, output_dir),
            )
        )
    return rows


def _write_output(job: JobRecord, output_dir: Path) -> str:
    if job.result_path:
        target = output_dir / f"{job.kind}.{job.ext or 'bin'}"
        shutil.copyfile(job.result_path, target)
        return str(target)
    if job.result is not None:
        target = output_dir / f"{job.kind}.json"
        target.write_text(json.dumps(job.result, indent=2) + "\n", encoding="utf-8")
        return str(target)
    return job.error or "-"


def _print_table(rows: list[Row]) -> None:
    headers = ("kind", "model", "engine", "status", "ms", "output")
    table = [headers, *((r.kind, r.model, r.engine, r.status, str(r.ms), r.output) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    click.echo("")
    for n, row in enumerate(table):
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def _short(kind: str) -> str:
    return {"audio_stt": "stt", "audio_tts": "tts"}.get(kind, kind)


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)
