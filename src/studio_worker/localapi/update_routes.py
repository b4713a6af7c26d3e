"""Self-update through the running daemon (docs/update.md): it owns the one-job slot.

    GET  /daemon/update           why self-update is off (or null) and the last check
    POST /daemon/update/check     ask the repository now; never downloads nor installs
    POST /daemon/update/install   check, download, install and restart now, when idle
                                  (`{"waitForJob": true}`: after the running job instead)

Both POSTs answer the updater's result as `{"outcome", "message", "current", "latest",
"detail"}` (`message` is the `studio-worker check-update` line). `install` answers 409
`{"error": "busy", …}` when a job holds the slot (it never interrupts one; the automatic
update waits for the job by itself) or an update is already being installed; after
`"outcome": "installed"` the daemon stops and replaces its process with the new version.
With `waitForJob` the answer comes once the update is installed: it downloads while the
job runs, then takes the slot between that job and the next offer, as the automatic
update does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from studio_worker.localapi.http import ApiError, read_json
from studio_worker.platform import updater as up

if TYPE_CHECKING:
    from studio_worker.localapi.server import LocalApiDeps


class UpdateRoutes:
    def __init__(self, deps: LocalApiDeps) -> None:
        self.deps = deps

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/daemon/update", self.state)
        app.router.add_post("/daemon/update/check", self.check)
        app.router.add_post("/daemon/update/install", self.install)

    def _updater(self) -> up.Updater:
        updater = self.deps.updater
        if updater is None:
            raise ApiError(503, "no_updater", "this daemon runs without its update loop")
        return updater

    async def state(self, request: web.Request) -> web.Response:
        updater = self._updater()
        body: dict[str, Any] = {"whyOff": updater.why_off(), "current": updater.current_version}
        found = up.last_check(updater.layout) if updater.layout is not None else None
        body["lastCheck"] = None if found is None else {"at": found[0], **found[1].to_json()}
        return web.json_response(body)

    async def check(self, request: web.Request) -> web.Response:
        result = await self._updater().check_now()
        return web.json_response(result.to_json())

    async def install(self, request: web.Request) -> web.Response:
        updater = self._updater()
        wait = (await read_json(request)).get("waitForJob", False)
        if not isinstance(wait, bool):
            raise ApiError(400, "bad_request", "waitForJob: must be true or false")
        holder = self.deps.gate.holder
        if holder == up.GATE_HOLDER:
            raise ApiError(409, "busy", "not now: an update is already being installed")
        if holder is not None and not wait:
            raise ApiError(
                409,
                "busy",
                f"not now: a job is running ({holder}); the update never interrupts a job."
                " Run it again once the job has ended, or ask to wait for the job"
                " (`studio-worker update --wait`).",
            )
        if self.deps.stop.is_set():
            raise ApiError(409, "stopping", "not now: the daemon is stopping")
        result = await updater.update_now(self.deps.stop)
        return web.json_response(result.to_json())
