"""The window preferences (`ui.toml`, behaviour §12.5 "This window", §12.7) over the API.

    GET /ui/prefs   {"theme", "reduceMotion", "notifyOnCompletion", "notifyOnFailure"}
    PUT /ui/prefs   any of those keys; answers the saved prefs and `changed`

Token-protected like every data route (only the dashboard's static files under `/ui/` are
public). The dashboard applies and stores each change at once; the tray's watch loop reads
the file live, so a notification switch takes effect with the next status sample. Errors:
400 `{"error": "bad_request"}` for an unknown key or a body that is not a JSON object,
400 `{"error": "invalid_prefs", "message": "<key>: <problem>"}` for a bad value, 500
`prefs_not_saved` when the file cannot be written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from studio_worker.config.errors import ConfigError
from studio_worker.config.ui_prefs import UiPrefs, UiPrefsFile, problem
from studio_worker.localapi.http import ApiError, read_json

if TYPE_CHECKING:
    from studio_worker.localapi.server import LocalApiDeps

log = logging.getLogger(__name__)

PREFS_PATH = "/ui/prefs"
# camelCase key on the API -> ui.toml key
API_KEYS: Mapping[str, str] = {
    "theme": "theme",
    "reduceMotion": "reduce_motion",
    "notifyOnCompletion": "notify_on_completion",
    "notifyOnFailure": "notify_on_failure",
}


def prefs_json(prefs: UiPrefs) -> dict[str, Any]:
    return {key: getattr(prefs, name) for key, name in API_KEYS.items()}


def validate_prefs(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ui.toml changes a PUT asks for; ApiError on an unknown key or a bad value."""
    unknown = sorted(set(body) - set(API_KEYS))
    if unknown:
        raise ApiError(400, "bad_request", f"not a window preference: {', '.join(unknown)}")
    changes: dict[str, Any] = {}
    for key, value in body.items():
        why = problem(API_KEYS[key], value)
        if why is not None:
            raise ApiError(400, "invalid_prefs", f"{key}: {why}")
        changes[API_KEYS[key]] = value
    return changes


class PrefsRoutes:
    def __init__(self, deps: LocalApiDeps) -> None:
        self.file = UiPrefsFile(deps.config_path)

    def routes(self, app: web.Application) -> None:
        # before the dashboard's `/ui/{name}` assets, which would answer 404 for it
        app.router.add_get(PREFS_PATH, self.get)
        app.router.add_put(PREFS_PATH, self.put)

    async def get(self, request: web.Request) -> web.Response:
        prefs = await asyncio.to_thread(self.file.current)
        return web.json_response(prefs_json(prefs))

    async def put(self, request: web.Request) -> web.Response:
        changes = validate_prefs(await read_json(request))
        before = await asyncio.to_thread(self.file.current)
        try:
            saved = await asyncio.to_thread(self.file.update, changes)
        except ConfigError as exc:
            raise ApiError(500, "prefs_not_saved", str(exc)) from None
        changed = [
            key for key, name in API_KEYS.items() if getattr(before, name) != getattr(saved, name)
        ]
        log.info(
            "window preferences saved from the local API: changed=%s",
            ",".join(changed) or "(none)",
            extra={"op": "prefs", "changed": changed},
        )
        return web.json_response({"prefs": prefs_json(saved), "changed": changed})
