"""The local API's guards and daemon routes on a real daemon (behaviour §8)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import tomllib

import httpx
import pytest
from tests.localapi.conftest import LLM_MODEL, Rig, wait_until

from studio_worker.localapi.guards import UNAUTHORIZED


async def test_discovery_file_is_owner_only_and_names_a_loopback_url(rig: Rig) -> None:
    discovery = rig.config.parent / "local-api.json"
    assert stat.S_IMODE(discovery.stat().st_mode) == 0o600
    assert rig.url.startswith("http://127.0.0.1:")
    assert len(rig.token) == 64
    assert "local_api_token" not in rig.config.read_text()  # generated per start


async def test_healthz_needs_no_token(rig: Rig) -> None:
    response = await rig.http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["busy"] is False
    assert body["modelsRoot"] == str(rig.models_root)


@pytest.mark.parametrize(
    ("headers", "status", "text"),
    [
        ({"Host": "evil.example"}, 403, 'forbidden: non-loopback Host header "evil.example"'),
        ({"Host": "evil.example:80"}, 403, 'forbidden: non-loopback Host header "evil.example:80"'),
        ({"Origin": "https://evil.example"}, 403, "cross-site request from Origin"),
        ({"Origin": "null"}, 403, 'forbidden: cross-site request from Origin "null"'),
        ({"Authorization": "Bearer nope"}, 401, UNAUTHORIZED),
        ({"Authorization": ""}, 401, UNAUTHORIZED),
    ],
)
async def test_guards_refuse_in_order(
    rig: Rig, headers: dict[str, str], status: int, text: str
) -> None:
    base = {} if "Authorization" in headers else rig.auth
    response = await rig.http.get("/daemon/status", headers={**base, **headers})
    assert response.status_code == status
    assert text in response.text
    # a bad Host wins over a good token; a loopback Origin and Host pass
    ok = await rig.http.get(
        "/daemon/status",
        headers={**rig.auth, "Origin": "http://localhost:3000", "Host": "[::1]:1234"},
    )
    assert ok.status_code == 200


async def test_a_denial_is_logged_at_warn(rig: Rig) -> None:
    await rig.http.get("/jobs", headers={"Authorization": "bearer wrong"})
    entries = (await rig.get("/daemon/logs")).json()["entries"]
    assert any(e["level"] == "warn" and "denied GET /jobs" in e["message"] for e in entries)


async def test_oversized_bodies_are_refused_413(rig: Rig) -> None:
    big = b"x" * (1024 * 1024 + 1)
    declared = await rig.put("/daemon/config", content=big)
    assert declared.status_code == 413
    assert declared.text == "request body exceeds 1048576 bytes"

    async def chunks():  # no Content-Length: counted while read
        for _ in range(17):
            yield b"y" * 65536

    streamed = await rig.put("/daemon/config", content=chunks())
    assert streamed.status_code == 413


async def test_status_logs_jobs_and_not_found(rig: Rig) -> None:
    status = (await rig.get("/daemon/status")).json()
    assert status["pid"] == os.getpid()
    assert status["configPath"] == str(rig.config)
    assert status["localApiUrl"] == rig.url
    assert status["paused"] is False
    assert status["config"]["modelsRoot"] == str(rig.models_root)
    assert "token" not in json.dumps(status).lower()
    assert {"session", "registration", "heartbeat", "recentJobs", "logsSeq"} <= set(status)

    logs = (await rig.get("/daemon/logs", params={"after": 0})).json()
    assert logs["seq"] >= len(logs["entries"]) > 0
    newer = (await rig.get("/daemon/logs", params={"after": logs["seq"]})).json()
    assert all(e["seq"] > logs["seq"] for e in newer["entries"])
    restarted = (await rig.get("/daemon/logs", params={"after": 10**9})).json()
    assert len(restarted["entries"]) >= len(logs["entries"])
    assert (await rig.get("/daemon/logs", params={"after": "x"})).status_code == 400

    jobs = (await rig.get("/jobs")).json()
    assert jobs == {"current": None, "recent": []}
    missing = await rig.get("/daemon/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    other = await rig.get("/elsewhere")
    assert (other.status_code, other.text) == (404, "not found")
    unknown = await rig.get("/jobs/job-x/log")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_job")


async def test_config_get_put_validated_saved_atomically_owner_only(rig: Rig) -> None:
    config = (await rig.get("/daemon/config")).json()
    assert config["apiBaseUrl"] == rig.studio.url + "/" or config["apiBaseUrl"].startswith("http")
    assert not any("token" in key.lower() or "secret" in key.lower() for key in config)

    bad = await rig.put("/daemon/config", json={"autoUpdateIntervalSecs": 5})
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "invalid_config",
        "message": "autoUpdateIntervalSecs: must be at least 60 seconds",
    }
    for body, message in (
        ({"apiBaseUrl": "ftp://x"}, "apiBaseUrl: must be an http(s) URL"),
        ({"vramThresholdGb": -1}, "vramThresholdGb: must be a number of GB, 0 or more"),
        ({"modelsRoot": " "}, "modelsRoot: must not be empty"),
        ({"startMinimised": "yes"}, "startMinimised: must be true or false"),
    ):
        answer = await rig.put("/daemon/config", json=body)
        assert (answer.status_code, answer.json()["message"]) == (400, message)
    secret = await rig.put("/daemon/config", json={"authToken": "x"})
    assert (secret.status_code, secret.json()["error"]) == (400, "bad_request")
    broken = await rig.put(
        "/daemon/config", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["message"].startswith("bad json")

    before = rig.config.stat().st_ino
    ok = await rig.put("/daemon/config", json={"vramThresholdGb": 6.5, "autoStart": False})
    assert ok.status_code == 200
    body = ok.json()
    assert body["changed"] == ["vramThresholdGb", "autoStart"]
    assert body["restartRequired"] is False
    saved = tomllib.loads(rig.config.read_text())
    assert (saved["vram_threshold_gb"], saved["auto_start"]) == (6.5, False)
    assert saved["worker_id"]  # the credentials survive
    assert stat.S_IMODE(rig.config.stat().st_mode) == 0o600
    assert rig.config.stat().st_ino != before  # replaced by rename, not rewritten in place

    moved = await rig.put("/daemon/config", json={"modelsRoot": str(rig.models_root / "x")})
    assert moved.json()["restartRequired"] is True
    assert (await rig.get("/daemon/config")).json()["vramThresholdGb"] == 6.5


async def test_models_list_and_delete(rig: Rig) -> None:
    listed = (await rig.get("/models")).json()
    ids = [m["id"] for m in listed["models"]]
    assert ids == [f"llama-cpp/{LLM_MODEL}"]
    assert listed["models"][0]["sizeBytes"] > 0
    openai_ids = [m["id"] for m in (await rig.get("/v1/models")).json()["data"]]
    assert openai_ids == ids
    gone = await rig.delete(f"/models/llama-cpp/{LLM_MODEL}")
    assert gone.status_code == 200 and gone.json()["freedBytes"] > 0
    assert (await rig.get("/models")).json()["models"] == []
    again = await rig.delete(f"/models/llama-cpp/{LLM_MODEL}")
    assert (again.status_code, again.json()["error"]) == (404, "unknown_model")


async def test_registration_reset_only_when_rejected(rig: Rig) -> None:
    answer = await rig.post("/daemon/registration/reset")
    assert (answer.status_code, answer.json()["error"]) == (409, "not_rejected")


async def test_pause_via_api_rejects_the_studio_offer_then_resume_completes(rig: Rig) -> None:
    await wait_until(lambda: rig.daemon.status.snapshot().session_state.value == "connected", "ws")
    paused = await rig.post("/daemon/pause")
    assert paused.json() == {"paused": True}
    assert tomllib.loads(rig.config.read_text())["paused"] is True
    assert (await rig.get("/daemon/status")).json()["paused"] is True

    job_id = rig.studio.submit_job("llm", {"messages": [{"role": "user", "content": "hi"}]})

    def rejected() -> bool:
        return any(
            f"rejecting offer {job_id}: worker is paused" in e["message"]
            for e in rig.daemon.log_ring.since(0)[0]
        )

    await wait_until(rejected, "the paused rejection")
    job = rig.studio.get_job(job_id)
    assert job is not None and job.status == "queued"

    resumed = await rig.post("/daemon/resume")
    assert resumed.json() == {"paused": False}
    done = await rig.studio.wait_for_job(job_id, 30)
    assert done.status == "done"
    jobs = (await rig.get("/jobs")).json()
    assert [(j["jobId"], j["source"]) for j in jobs["recent"]] == [(job_id, "studio")]


async def test_shutdown_answers_202_then_stops_and_removes_discovery(rig: Rig) -> None:
    answer = await rig.post("/daemon/shutdown")
    assert (answer.status_code, answer.json()) == (202, {"ok": True})
    await wait_until(rig.daemon.stop.is_set, "the stop")
    await wait_until(lambda: not (rig.config.parent / "local-api.json").exists(), "discovery gone")
    await asyncio.sleep(0.1)
    with pytest.raises(httpx.TransportError):
        await rig.http.get("/healthz")
