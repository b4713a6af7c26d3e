"""GET/PUT /ui/prefs on a real daemon: the window preferences in ui.toml next to the
config, validated, token-protected, and beside the dashboard's public /ui/ assets."""

from __future__ import annotations

import stat
import sys
import tomllib

from tests.localapi.conftest import Rig

DEFAULTS = {
    "theme": "dark",
    "reduceMotion": False,
    "notifyOnCompletion": False,
    "notifyOnFailure": False,
}


async def test_prefs_read_and_write_ui_toml(rig: Rig) -> None:
    ui_toml = rig.config.parent / "ui.toml"
    got = await rig.get("/ui/prefs")
    assert got.status_code == 200
    assert got.json() == DEFAULTS
    assert not ui_toml.exists()  # reading writes nothing

    put = await rig.put("/ui/prefs", json={"notifyOnCompletion": True, "theme": "light"})
    assert put.status_code == 200
    assert put.json() == {
        "prefs": {**DEFAULTS, "notifyOnCompletion": True, "theme": "light"},
        "changed": ["theme", "notifyOnCompletion"],
    }
    assert tomllib.loads(ui_toml.read_text()) == {
        "theme": "light",
        "reduce_motion": False,
        "notify_on_completion": True,
        "notify_on_failure": False,
    }
    if sys.platform != "win32":
        assert stat.S_IMODE(ui_toml.stat().st_mode) == 0o600

    ui_toml.write_text('theme = "system"\nreduce_motion = true\n')  # by hand: read live
    assert (await rig.get("/ui/prefs")).json() == {
        **DEFAULTS,
        "theme": "system",
        "reduceMotion": True,
    }
    again = await rig.put("/ui/prefs", json={"reduceMotion": True})
    assert again.json()["changed"] == []


async def test_prefs_refusals(rig: Rig) -> None:
    ui_toml = rig.config.parent / "ui.toml"
    cases = [
        ({"theme": "neon"}, "invalid_prefs", "theme: must be one of dark, light, system"),
        ({"notifyOnFailure": "yes"}, "invalid_prefs", "notifyOnFailure: must be true or false"),
        ({"fontSize": 14}, "bad_request", "not a window preference: fontSize"),
    ]
    for body, code, message in cases:
        refused = await rig.put("/ui/prefs", json=body)
        assert refused.status_code == 400
        assert refused.json() == {"error": code, "message": message}
    not_object = await rig.put("/ui/prefs", content=b"[1]")
    assert not_object.status_code == 400
    assert not_object.json()["error"] == "bad_request"
    assert not ui_toml.exists()  # nothing was written

    for method in ("GET", "PUT"):  # no token: refused like every data route
        denied = await rig.http.request(method, "/ui/prefs", json={"theme": "light"})
        assert denied.status_code == 401
    assert not ui_toml.exists()
    # the dashboard's own assets under /ui/ stay public
    asset = await rig.http.get("/ui/config.js")
    assert asset.status_code == 200
    assert "WindowCard" in asset.text
