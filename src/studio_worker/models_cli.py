"""`studio-worker models list|pull|rm`: the model cache from the command line.

Uses the same `ModelStore` as the daemon, under the config's `models_root`, so a model
pulled here is what a job finds later (and a partial left by either side is resumed by
the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import click
import httpx
from pydantic import ValidationError

from studio_worker.config.paths import default_config_path
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.domain.tasks import ModelFile, ModelSource
from studio_worker.models.errors import ModelError
from studio_worker.models.store import CachedFile, CachedModel, DownloadProgress, ModelStore

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    """The settings of the config the top-level `--config` chose (or the default one)."""
    path = getattr(ctx.find_root().obj, "config_path", None)
    return ConfigStore(path if isinstance(path, Path) else default_config_path()).load()


def _with_store(
    settings: Settings,
    action: Callable[[ModelStore], Awaitable[T]],
    on_progress: Callable[[DownloadProgress], None] | None = None,
) -> T:
    async def main() -> T:
        async with httpx.AsyncClient() as http:
            store = ModelStore(settings.models_root, http=http, on_progress=on_progress)
            return await action(store)

    try:
        return asyncio.run(main())
    except ModelError as exc:
        raise click.ClickException(exc.message) from None


def human_bytes(n: float) -> str:
    """`512 B`, `1.5 kB`, `3.9 GB` (decimal units, as download sizes are quoted)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@click.group("models")
def models_group() -> None:
    """List, download and remove model files under models_root."""


# -- list ------------------------------------------------------------------------------


def _file_json(f: CachedFile) -> dict[str, Any]:
    return {"name": f.name, "size": f.size}


def _model_json(m: CachedModel) -> dict[str, Any]:
    return {
        "engine": m.engine,
        "model": m.model,
        "path": str(m.path),
        "size": m.size,
        "files": [_file_json(f) for f in m.files],
        "partials": [_file_json(f) for f in m.partials],
    }


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of lines.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show cached models: engine, model, files with sizes, partial downloads."""
    settings = _settings(ctx)

    async def scan(store: ModelStore) -> list[CachedModel]:
        return store.cached()

    models = _with_store(settings, scan)
    if as_json:
        payload = {
            "modelsRoot": str(settings.models_root),
            "models": [_model_json(m) for m in models],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"models_root: {settings.models_root}")
    if not models:
        click.echo("no models cached")
        return
    for m in models:
        click.echo(f"{m.engine}  {m.model}  ({human_bytes(m.size)})")
        for f in m.files:
            click.echo(f"  {f.name}  {human_bytes(f.size)}")
        for f in m.partials:
            click.echo(f"  {f.name}  partial download: {human_bytes(f.size)} so far")


# -- pull ------------------------------------------------------------------------------


def _filename_from_url(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name:
        raise click.ClickException(f"cannot take a file name from {url}: pass --filename")
    return name


def _source_from_file(path: Path) -> ModelSource:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"reading {path}: {exc.strerror or exc}") from None
    try:
        source = ModelSource.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(f"{path} is not a ModelSource: {problems}") from None
    if not source.files:
        raise click.ClickException(f"{path} lists no files")
    return source


def _source_from_options(
    engine: str | None,
    urls: tuple[str, ...],
    sha256s: tuple[str, ...],
    filenames: tuple[str, ...],
    role: str,
) -> ModelSource:
    if not engine:
        raise click.UsageError("--engine is required with --url")
    if not urls:
        raise click.UsageError("give --url (one per file) or --source FILE.json")
    for flag, values in (("--sha256", sha256s), ("--filename", filenames)):
        if values and len(values) != len(urls):
            raise click.UsageError(
                f"{flag} was given {len(values)} times for {len(urls)} --url: "
                "give it once per --url, in the same order, or not at all"
            )
    files = [
        ModelFile(
            role=role,
            url=url,
            filename=filenames[i] if filenames else _filename_from_url(url),
            sha256=sha256s[i] if sha256s else None,
        )
        for i, url in enumerate(urls)
    ]
    return ModelSource(engine=engine, files=files)


class _Bars:
    """One click progress bar per file: bytes, rate and ETA."""

    def __init__(self) -> None:
        self._stacks: dict[str, contextlib.ExitStack] = {}
        self._bars: dict[str, Any] = {}
        self._shown: dict[str, int] = {}

    def __call__(self, p: DownloadProgress) -> None:
        if p.filename not in self._stacks:
            if p.finished:
                return
            stack = contextlib.ExitStack()
            bar = stack.enter_context(
                click.progressbar(
                    length=max(p.total or 0, p.done, 1),
                    label=p.filename,
                    show_eta=False,
                    show_percent=p.total is not None,
                    item_show_func=_describe,
                )
            )
            self._stacks[p.filename], self._bars[p.filename] = stack, bar
            self._shown[p.filename] = 0
        bar = self._bars[p.filename]
        bar.update(p.done - self._shown[p.filename], p)
        self._shown[p.filename] = p.done
        if p.finished:
            self._stacks.pop(p.filename).close()
            del self._bars[p.filename]

    def close(self) -> None:
        for stack in self._stacks.values():
            stack.close()
        self._stacks.clear()


def _describe(p: DownloadProgress | None) -> str | None:
    if p is None:
        return None
    size = human_bytes(p.done)
    if p.total is not None:
        size += f" / {human_bytes(p.total)}"
    text = f"{size} at {human_bytes(p.rate_bps)}/s"
    if p.eta_s is not None and not p.finished:
        text += f", {_duration(p.eta_s)} left"
    return text


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@models_group.command("pull")
@click.argument("model")
@click.option("--engine", help="Engine that runs the model (modelSource.engine), e.g. sd-cpp.")
@click.option("--url", "urls", multiple=True, metavar="URL", help="A file to fetch; repeatable.")
@click.option(
    "--sha256", "sha256s", multiple=True, metavar="HEX", help="Expected sha256, once per --url."
)
@click.option(
    "--filename",
    "filenames",
    multiple=True,
    metavar="NAME",
    help="File name on disk, once per --url (default: the URL's last path segment).",
)
@click.option("--role", default="model", show_default=True, help="ModelFile role of the files.")
@click.option(
    "--source",
    "source_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.json",
    help="A whole ModelSource (wire JSON, camelCase) instead of --engine/--url.",
)
@click.pass_context
def pull_cmd(
    ctx: click.Context,
    *,
    model: str,
    engine: str | None,
    urls: tuple[str, ...],
    sha256s: tuple[str, ...],
    filenames: tuple[str, ...],
    role: str,
    source_path: Path | None,
) -> None:
    """Download MODEL's files into the cache (resuming any partial download)."""
    if source_path is not None:
        if urls or sha256s or filenames or engine:
            raise click.UsageError("--source replaces --engine/--url/--sha256/--filename")
        source = _source_from_file(source_path)
    else:
        source = _source_from_options(engine, urls, sha256s, filenames, role)
    settings = _settings(ctx)
    bars = _Bars()

    async def pull(store: ModelStore) -> dict[str, Path]:
        return await store.ensure(model, source)

    try:
        paths = _with_store(settings, pull, on_progress=bars)
    finally:
        bars.close()
    for name, path in paths.items():
        click.echo(f"{name}  {human_bytes(path.stat().st_size)}  {path}")
    click.echo(f"{model}: {len(paths)} file(s) ready for engine {source.engine}")


# -- rm --------------------------------------------------------------------------------


@models_group.command("rm")
@click.argument("model")
@click.option("--engine", required=True, help="Engine the model was pulled for.")
@click.pass_context
def rm_cmd(ctx: click.Context, model: str, engine: str) -> None:
    """Remove a cached model (its folder, partial downloads included)."""
    settings = _settings(ctx)

    async def remove(store: ModelStore) -> int:
        return store.remove(engine, model)

    freed = _with_store(settings, remove)
    click.echo(f"removed {engine}/{model} ({human_bytes(freed)} freed)")
