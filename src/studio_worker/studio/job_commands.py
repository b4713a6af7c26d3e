"""`studio submit / jobs / job`: queue jobs and inspect them over the admin API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from studio_worker.studio.admin_client import AdminError
from studio_worker.studio.cli_support import admin_client, call, client_options, print_json, table
from studio_worker.studio.core import DEFAULT_MODEL_SOURCE

KINDS = ("image", "llm", "audio_stt", "audio_tts", "video")


def build_task(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The task object for `kind` from the submit options (protocol §5)."""
    prompt, text = opts.get("prompt"), opts.get("text")
    task: dict[str, Any] = {"kind": kind}
    if kind in ("image", "video"):
        if not prompt:
            raise click.UsageError(f"{kind} jobs need --prompt")
        task["prompt"] = prompt
        for key in ("width", "height"):
            if opts.get(key):
                task[key] = opts[key]
        if kind == "image" and opts.get("steps"):
            task["steps"] = opts["steps"]
        if kind == "video" and opts.get("seconds"):
            task["seconds"] = opts["seconds"]
    elif kind == "llm":
        messages = [{"role": "user", "content": m} for m in opts.get("message") or ()]
        if prompt:
            messages.append({"role": "user", "content": prompt})
        if not messages:
            raise click.UsageError("llm jobs need --prompt or --message")
        task["messages"] = messages
        if opts.get("system"):
            task["system"] = opts["system"]
        if opts.get("max_tokens"):
            task["maxTokens"] = opts["max_tokens"]
    elif kind == "audio_stt":
        if not opts.get("input_url"):
            raise click.UsageError("audio_stt jobs need --input-url")
        task["inputUrl"] = opts["input_url"]
    elif kind == "audio_tts":
        if not (text or prompt):
            raise click.UsageError("audio_tts jobs need --text")
        task["text"] = text or prompt
        if opts.get("voice"):
            task["voice"] = opts["voice"]
    if opts.get("ext") and kind in ("image", "audio_tts", "video"):
        task["ext"] = opts["ext"]
    return task


@click.command("submit")
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--prompt", help="Prompt (image, video, llm user message, tts text).")
@click.option("--text", help="Text to speak (audio_tts).")
@click.option("--message", multiple=True, help="An llm user message; repeatable.")
@click.option("--system", help="llm system prompt.")
@click.option("--max-tokens", type=int, help="llm generation budget.")
@click.option("--input-url", help="Audio URL to transcribe (audio_stt).")
@click.option("--voice", help="Voice (audio_tts).")
@click.option("--width", type=int, help="Width in pixels (image, video).")
@click.option("--height", type=int, help="Height in pixels (image, video).")
@click.option("--steps", type=int, help="Sampling steps (image).")
@click.option("--seconds", type=float, help="Clip length (video).")
@click.option("--ext", help="Requested output extension (image, audio_tts, video).")
@click.option("--model", default="synthetic", show_default=True, help="Model id.")
@click.option("--engine", default="synthetic", show_default=True, help="modelSource.engine.")
@click.option(
    "--model-source",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSON file with a full modelSource (overrides --engine).",
)
@click.option("--vram", type=float, default=0.0, show_default=True, help="vramGbEstimate.")
@click.option("--game-id", default="local", show_default=True, help="gameId of the job.")
@click.option("--asset-name", default="", help="assetName of the job.")
@client_options
def submit(kind: str, **opts: Any) -> None:
    """Queue a job of KIND; prints its job id."""
    source: dict[str, Any] = {**DEFAULT_MODEL_SOURCE, "engine": opts["engine"]}
    if opts["model_source"] is not None:
        try:
            source = json.loads(opts["model_source"].read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read --model-source: {exc}") from None
    body = {
        "kind": kind,
        "task": build_task(kind, opts),
        "model": opts["model"],
        "modelSource": source,
        "vramGbEstimate": opts["vram"],
        "gameId": opts["game_id"],
        "assetName": opts["asset_name"],
    }
    data = call(
        opts["url"], opts["data_dir"], opts["admin_token"], "POST", "/admin/jobs", body=body
    )
    click.echo(data["jobId"])


@click.command("jobs")
@click.option("--status", type=click.Choice(("queued", "offered", "running", "done", "failed")))
@click.option("--json", "as_json", is_flag=True, help="Print raw JSON.")
@client_options
def jobs(
    status: str | None, as_json: bool, url: str, data_dir: Path, admin_token: str | None
) -> None:
    """List jobs, newest first."""
    path = "/admin/jobs" + (f"?status={status}" if status else "")
    data = call(url, data_dir, admin_token, "GET", path)
    if as_json:
        print_json(data)
        return
    rows = [
        [
            j["jobId"],
            j["kind"],
            j["status"],
            str(j["attempts"]),
            j["workerId"] or "-",
            j["model"],
            (j["error"] or "")[:60],
        ]
        for j in data
    ]
    table(rows, ["JOB", "KIND", "STATUS", "TRIES", "WORKER", "MODEL", "ERROR"])


@click.command("job")
@click.argument("job_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the result bytes (or JSON) to this file.",
)
@client_options
def job(
    job_id: str, output: Path | None, url: str, data_dir: Path, admin_token: str | None
) -> None:
    """Show one job as JSON; with --output, download its result."""
    data = call(url, data_dir, admin_token, "GET", f"/admin/jobs/{job_id}")
    print_json(data)
    if output is None:
        return
    with admin_client(url, data_dir, admin_token) as client:
        try:
            response = client.request("GET", f"/admin/jobs/{job_id}/result")
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None
    output.write_bytes(response.content)
    click.echo(f"saved {len(response.content)} bytes to {output}", err=True)
