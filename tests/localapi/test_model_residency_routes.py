"""Model residency through the local API, on a real daemon with the real llama engine: load a
cached tiny GGUF into the engine process, see it resident, unload it and see the process go."""

from __future__ import annotations

import os
from typing import Any

from tests.localapi.conftest import LLM_MODEL, Rig

from studio_worker.engines.host import HostedEngine
from studio_worker.jobs.gate import JobGate

LLM_ID = f"llama-cpp/{LLM_MODEL}"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def gate(rig: Rig) -> JobGate:
    assert rig.daemon.local_api is not None
    return rig.daemon.local_api.deps.gate


def llama(rig: Rig) -> HostedEngine:
    engine = rig.daemon.engines.named("llama")
    assert isinstance(engine, HostedEngine)
    return engine


async def models(rig: Rig) -> dict[str, Any]:
    answer = await rig.get("/models")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


async def test_load_makes_a_cached_model_resident_and_unload_stops_its_process(rig: Rig) -> None:
    before = await models(rig)
    [cached] = [m for m in before["models"] if m["id"] == LLM_ID]
    assert (cached["resident"], cached["residentIn"], cached["loadable"]) == (False, None, True)
    engines = {e["name"]: e for e in before["engines"]}
    assert engines["llama"]["running"] is False  # engine processes start lazily
    assert engines["llama"]["wireNames"] == ["llama-cpp"]
    assert engines["synthetic"]["hosted"] is False

    loaded = await rig.post("/models/load", json={"engine": "llama-cpp", "model": LLM_MODEL})
    assert loaded.status_code == 200, loaded.text
    body = loaded.json()
    pid = body["pid"]
    assert (body["ok"], body["id"], body["engine"]) == (True, LLM_ID, "llama")
    assert [(r["model"], r["file"]) for r in body["resident"]] == [(LLM_ID, "tiny.gguf")]
    assert pid is not None and pid != os.getpid() and not gone(pid)
    assert llama(rig).host.loads == 1  # loaded in the engine process, no job ran
    assert (await rig.get("/jobs")).json()["recent"] == []

    after = await models(rig)
    [cached] = [m for m in after["models"] if m["id"] == LLM_ID]
    assert (cached["resident"], cached["residentIn"]) == (True, "llama")
    resident = {e["name"]: e for e in (await rig.get("/models/resident")).json()["engines"]}
    assert resident["llama"]["running"] is True and resident["llama"]["pid"] == pid
    assert [r["model"] for r in resident["llama"]["resident"]] == [LLM_ID]

    # a chat on the resident model does not load it again
    chat = await rig.post(
        "/v1/chat/completions",
        json={"model": LLM_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert chat.status_code == 200, chat.text
    assert llama(rig).host.loads == 1 and llama(rig).host.pid == pid

    unloaded = await rig.post("/models/unload", json={"engine": "llama"})
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json() == {"ok": True, "engine": "llama", "stopped": True, "pid": pid}
    assert gone(pid)
    final = await models(rig)
    [cached] = [m for m in final["models"] if m["id"] == LLM_ID]
    assert cached["resident"] is False
    llama_json = next(e for e in final["engines"] if e["name"] == "llama")
    assert (llama_json["running"], llama_json["pid"], llama_json["resident"]) == (False, None, [])

    again = await rig.post("/models/unload", json={"engine": "llama-cpp"})  # wire names work too
    assert again.json() == {"ok": True, "engine": "llama", "stopped": False, "pid": None}


async def test_deleting_a_loaded_model_stops_the_engine_process_first(rig: Rig) -> None:
    loaded = await rig.post("/models/load", json={"model": LLM_ID})
    assert loaded.status_code == 200, loaded.text
    pid = loaded.json()["pid"]
    held = gate(rig)
    assert held.try_reserve("job-elsewhere")
    try:
        busy = await rig.delete(f"/models/{LLM_ID}")
        assert (busy.status_code, busy.json()["error"]) == (409, "busy")
    finally:
        held.release("job-elsewhere")
    assert not gone(pid) and (rig.models_root / LLM_ID).is_dir()  # nothing happened
    deleted = await rig.delete(f"/models/{LLM_ID}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["unloaded"] == ["llama"]
    assert gone(pid) and not (rig.models_root / LLM_ID).exists()
    assert LLM_ID not in [m["id"] for m in (await models(rig))["models"]]


async def test_load_and_unload_refuse_while_the_job_gate_is_held(rig: Rig) -> None:
    held = gate(rig)
    assert held.try_reserve("job-elsewhere")
    try:
        for path, body in (
            ("/models/load", {"engine": "llama-cpp", "model": LLM_MODEL}),
            ("/models/unload", {"engine": "llama"}),
        ):
            answer = await rig.post(path, json=body)
            assert (answer.status_code, answer.json()["error"]) == (409, "busy")
            assert "job-elsewhere" in answer.json()["message"]
    finally:
        held.release("job-elsewhere")
    assert llama(rig).host.running is False  # the refused load started nothing
    assert held.holder is None


async def test_load_names_what_is_wrong(rig: Rig) -> None:
    broken = rig.models_root / "llama-cpp" / "broken"
    broken.mkdir(parents=True)
    (broken / "broken.gguf").write_bytes(b"not a gguf at all")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"engine": "llama-cpp", "model": "nope"}, 404, "unknown_model"),
        ({"model": "llama-cpp/nope"}, 404, "unknown_model"),
        ({"model": LLM_MODEL}, 400, "bad_request"),
        ({"engine": "llama-cpp"}, 400, "bad_request"),
        ({"engine": "llama-cpp", "model": "broken"}, 500, "load_failed"),
    ]
    for body, status, code in cases:
        answer = await rig.post("/models/load", json=body)
        assert (answer.status_code, answer.json()["error"]) == (status, code), body
    failed = await rig.post("/models/load", json={"model": "llama-cpp/broken"})
    assert "could not load model broken.gguf" in failed.json()["message"]
    assert gate(rig).holder is None

    unknown = await rig.post("/models/unload", json={"engine": "nope"})
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_engine")
    bad = await rig.post("/models/unload", json={})
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")
    synthetic = await rig.post("/models/unload", json={"engine": "synthetic"})
    assert synthetic.json() == {"ok": True, "engine": "synthetic", "stopped": False, "pid": None}
