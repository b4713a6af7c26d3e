"""Offers, outcomes, attempts, matching and the stale sweep (protocol §2.3, §3.3-§3.7)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from studio_worker.studio import JobStatus, StudioServer

from .peers import ADMIN, IMAGE_TASK, LLM_TASK, Peer, caps, expect, no_offer, send


async def upload(
    peer: Peer, worker_id: str, job_id: str, token: str, data: bytes
) -> httpx.Response:
    """The multipart `complete` of protocol §2.3."""
    return await peer.http.post(
        f"/graphics/api/workers/{worker_id}/jobs/{job_id}/complete",
        headers={"Authorization": f"Bearer {token}"},
        data={"prompt": "a lantern", "ext": "webp"},
        files={"image": (f"{job_id}.webp", data, "image/webp")},
    )


async def test_multipart_complete_stores_bytes(peer: Peer, studio: StudioServer) -> None:
    worker_id, token, ws = await peer.worker_session()
    job_id = studio.submit_job("image", IMAGE_TASK)
    await expect(ws, "offer")
    await send(ws, {"type": "accept", "jobId": job_id})
    assert (await upload(peer, worker_id, job_id, "bad", b"x")).status_code == 401
    ok = await upload(peer, worker_id, job_id, token, b"RIFF-bytes")
    assert ok.status_code == 200 and ok.json() == {"ok": True}

    job = await studio.wait_for_job(job_id, 5)
    assert job.status == "done" and job.ext == "webp" and job.mime == "image/webp"
    assert job.size == 10 and job.prompt == "a lantern"
    assert job.result_path is not None
    stored = Path(job.result_path)
    assert stored.name == f"{job_id}.webp"
    assert stored.read_bytes() == b"RIFF-bytes"  # noqa: ASYNC240 - a tiny test file

    assert (await upload(peer, worker_id, job_id, token, b"y")).status_code == 409
    other = studio.submit_job("image", IMAGE_TASK)
    await expect(ws, "offer")  # pushed to the now-idle worker
    assert (await upload(peer, worker_id, other, token, b"z")).status_code == 200

    async with httpx.AsyncClient(base_url=peer.base) as http:
        got = await http.get(
            f"/admin/jobs/{job_id}/result", headers={"Authorization": f"Bearer {ADMIN}"}
        )
    assert got.content == b"RIFF-bytes" and got.headers["content-type"] == "image/webp"
    await ws.close()


async def test_complete_for_a_job_not_held_is_409(peer: Peer, studio: StudioServer) -> None:
    worker_id, token = await peer.approved_worker()
    job_id = studio.submit_job("image", IMAGE_TASK)
    assert (await upload(peer, worker_id, job_id, token, b"x")).status_code == 409


async def test_reject_busy_requeues_without_attempt_or_reoffer(
    peer: Peer, studio: StudioServer
) -> None:
    _wid, _token, ws = await peer.worker_session()
    job_id = studio.submit_job("llm", LLM_TASK)
    await expect(ws, "offer")
    await send(
        ws,
        {
            "type": "reject",
            "jobId": job_id,
            "reason": "worker already has an in-flight job",
            "code": "busy",
        },
    )
    await no_offer(ws)
    job = studio.get_job(job_id)
    assert job is not None and job.status == "queued" and job.attempts == 0
    await send(ws, {"type": "heartbeat", "capabilities": caps()})
    assert (await expect(ws, "offer"))["claim"]["jobId"] == job_id  # self-heal
    await ws.close()


async def test_reject_without_code_spends_an_attempt(peer: Peer, studio: StudioServer) -> None:
    _wid, _token, ws = await peer.worker_session()
    job_id = studio.submit_job("llm", LLM_TASK)
    await expect(ws, "offer")
    await send(ws, {"type": "reject", "jobId": job_id, "reason": "nope"})
    await no_offer(ws, 0.2)
    job = studio.get_job(job_id)
    assert job is not None and job.status == "queued" and job.attempts == 1
    await ws.close()


async def test_fail_retryable_requeues_until_attempts_run_out(
    peer: Peer, studio: StudioServer
) -> None:
    _wid, _token, ws = await peer.worker_session()
    job_id = studio.submit_job("llm", LLM_TASK)
    for attempt in range(1, 4):
        await expect(ws, "offer")
        await send(ws, {"type": "accept", "jobId": job_id})
        await send(ws, {"type": "fail", "jobId": job_id, "error": "oom", "retryable": True})
        assert (await expect(ws, "failAck"))["jobId"] == job_id
        job = studio.get_job(job_id)
        assert job is not None and job.attempts == attempt
    assert job.status == "failed" and job.error is not None and "oom" in job.error
    await ws.close()


async def test_fail_not_retryable_fails_at_once(peer: Peer, studio: StudioServer) -> None:
    _wid, _token, ws = await peer.worker_session()
    job_id = studio.submit_job("llm", LLM_TASK)
    await expect(ws, "offer")
    await send(ws, {"type": "accept", "jobId": job_id})
    err = "sdcpp engine cannot serve llm tasks"
    await send(ws, {"type": "fail", "jobId": job_id, "error": err, "retryable": False})
    await expect(ws, "failAck")
    job = await studio.wait_for_job(job_id, 5)
    assert job.status == "failed" and job.error == err
    await ws.close()


@pytest.mark.parametrize(
    "cap",
    [
        {"taskKinds": ["image"]},
        {"vramThresholdGb": 2.0},
        {"autoEnabled": False},
        {"onlyWhenIdle": True, "userPresence": "active"},
        {"onlyWhenIdle": True},
    ],
)
async def test_offers_only_to_matching_workers(
    peer: Peer, studio: StudioServer, cap: dict[str, object]
) -> None:
    _wid, _token, ws = await peer.worker_session(**cap)
    studio.submit_job("llm", LLM_TASK, vram_gb_estimate=4.0)
    await no_offer(ws, 0.2)
    await ws.close()


async def test_earliest_connected_idle_worker_wins(peer: Peer, studio: StudioServer) -> None:
    _w1, _t1, first = await peer.worker_session(onlyWhenIdle=True, userPresence="idle")
    _w2, _t2, second = await peer.worker_session()
    job_id = studio.submit_job("llm", LLM_TASK)
    assert (await expect(first, "offer"))["claim"]["jobId"] == job_id
    other = studio.submit_job("llm", LLM_TASK)
    assert (await expect(second, "offer"))["claim"]["jobId"] == other
    await first.close()
    await second.close()


@pytest.mark.parametrize("studio_kwargs", [{"stale_after_s": 0.4, "sweep_every_s": 0.1}])
async def test_stale_session_is_closed_and_its_job_requeued(
    peer: Peer, studio: StudioServer
) -> None:
    _wid, _token, ws = await peer.worker_session()
    job_id = studio.submit_job("llm", LLM_TASK)
    await expect(ws, "offer")
    await send(ws, {"type": "accept", "jobId": job_id})
    job = await studio.jobs.wait_for(job_id, 5, statuses=(JobStatus.QUEUED,))
    assert job.attempts == 1 and job.worker_id is None
    await ws.wait_closed()
    assert ws.close_code == 1001


async def test_reconnected_worker_delivers_a_running_job(peer: Peer, studio: StudioServer) -> None:
    worker_id, token, ws = await peer.worker_session()
    job_id = studio.submit_job("llm", LLM_TASK)
    await expect(ws, "offer")
    await send(ws, {"type": "accept", "jobId": job_id})
    await studio.jobs.wait_for(job_id, 5, statuses=(JobStatus.RUNNING,))
    await ws.close()
    again = await peer.session(worker_id, token)
    await send(again, {"type": "completeJson", "jobId": job_id, "result": {"ok": 1}})
    assert (await expect(again, "completeAck"))["jobId"] == job_id
    assert (await studio.wait_for_job(job_id, 5)).result == {"ok": 1}
    await again.close()
