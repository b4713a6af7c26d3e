"""The web dashboard (issue 7): static files served by the local API, and its About route.

The page (`GET /`) and its assets (`GET /ui/<name>`) carry no data and no secret, so they
are the only routes served without the bearer token; the Host and Origin guards still
apply, so a DNS-rebinding page cannot load them either. Everything the page shows comes
from the token-protected JSON routes: the tray or the CLI opens `dashboard_url()`, which
hands the token to the page once in the URL fragment (never sent to a server, never in a
log or a Referer); the page moves it to `sessionStorage` and removes it from the address
bar. Served with a strict Content-Security-Policy: scripts, styles and fetches from this
origin only, no framing.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from studio_worker import __version__
from studio_worker.platform import updater

if TYPE_CHECKING:
    from studio_worker.localapi.server import LocalApiDeps

STATIC_DIR = Path(__file__).with_name("static")
INDEX = "index.html"
# The only files served: name -> content type. Nothing else under static/ is reachable.
ASSETS = {
    "app.js": "text/javascript",
    "views.js": "text/javascript",
    "config.js": "text/javascript",
    "style.css": "text/css",
    "icon.svg": "image/svg+xml",
}
UI_PREFIX = "/ui/"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def dashboard_url(api_url: str, token: str) -> str:
    """The address the tray's "Open dashboard" (or a CLI) opens: the token rides once in the
    fragment, which browsers never send to the server."""
    return f"{api_url.rstrip('/')}/#token={token}"


def is_public(method: str, path: str) -> bool:
    """The dashboard's static files: exempt from the bearer check (not from Host/Origin)."""
    if method not in ("GET", "HEAD"):
        return False
    return path == "/" or (path.startswith(UI_PREFIX) and path[len(UI_PREFIX) :] in ASSETS)


def variant() -> str:
    """`cpu`/`cuda`/`metal` of an installed build; `cpu` when run from a source checkout."""
    layout = updater.locate_install()
    return layout.variant() if isinstance(layout, updater.InstallLayout) else "cpu"


class DashboardRoutes:
    def __init__(self, deps: LocalApiDeps, url: Callable[[], str | None]) -> None:
        self.deps = deps
        self._url = url  # the bound base URL, once known
        self._cache: dict[str, bytes] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get(UI_PREFIX + "{name}", self.asset)
        app.router.add_get("/daemon/about", self.about)

    def _read(self, name: str) -> bytes:
        data = self._cache.get(name)
        if data is None:
            data = (STATIC_DIR / name).read_bytes()
            self._cache[name] = data
        return data

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._read(INDEX),
            content_type="text/html",
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        content_type = ASSETS.get(name)
        if content_type is None:
            return web.Response(status=404, text="not found")
        return web.Response(
            body=self._read(name),
            content_type=content_type,
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def about(self, request: web.Request) -> web.Response:
        settings = self.deps.live.current
        return web.json_response(
            {
                "version": __version__,
                "variant": variant(),
                "configPath": str(self.deps.config_path),
                "modelsRoot": str(settings.models_root),
                "localApiUrl": self._url(),
                "pid": os.getpid(),
                "python": platform.python_version(),
                "platform": f"{platform.system()} {platform.machine()}",
                "executable": sys.executable,
                "engines": self.deps.engines.names,
                "autoUpdate": {
                    "enabled": settings.auto_update_enabled,
                    "feed": settings.auto_update_feed,
                    "intervalSecs": settings.auto_update_interval_secs,
                    "prerelease": settings.auto_update_prerelease,
                },
            }
        )
