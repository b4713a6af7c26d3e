"""The update routes of the local API on a daemon that does not run from an installed
layout (a development checkout): they answer why self-update is off and never install.
The install path itself is tested over a real install in tests/platform/test_update_live.py.
"""

from __future__ import annotations

from tests.localapi.conftest import Rig


async def test_check_and_install_say_why_self_update_is_off(rig: Rig) -> None:
    state = (await rig.get("/daemon/update")).json()
    assert state["whyOff"].startswith("self-update is off for this install: ")
    assert state["lastCheck"] is None

    checked = await rig.post("/daemon/update/check")
    assert checked.status_code == 200
    body = checked.json()
    assert set(body) == {"outcome", "message", "current", "latest", "detail"}
    assert body["outcome"] == "off"
    assert body["message"] == state["whyOff"]

    installed = await rig.post("/daemon/update/install")
    assert installed.status_code == 200
    assert installed.json()["outcome"] == "off"


async def test_install_is_refused_while_a_job_holds_the_slot(rig: Rig) -> None:
    assert rig.daemon.local_api is not None
    gate = rig.daemon.local_api.deps.gate
    assert gate.try_reserve("job-1")
    try:
        refused = await rig.post("/daemon/update/install")
        assert refused.status_code == 409
        assert refused.json()["error"] == "busy"
        assert "a job is running (job-1)" in refused.json()["message"]
        bad = await rig.post("/daemon/update/install", json={"waitForJob": "yes"})
        assert bad.status_code == 400
    finally:
        gate.release("job-1")


async def test_the_update_routes_need_the_token(rig: Rig) -> None:
    for path in ("/daemon/update/check", "/daemon/update/install"):
        assert (await rig.http.post(path)).status_code == 401
