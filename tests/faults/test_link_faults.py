"""Faults on the worker ↔ studio link, injected by the proxy while a job is in flight.

Every test ends on "nothing lost": the studio's record of the job is final and it took
exactly the outcomes the fault allows (`deliveries`), with the right `retryable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy import binary_frame, text_frame
from rig import Rig, fault_rig

from studio_worker.app import EXIT_AUTH_FAILED, EXIT_FATAL
from studio_worker.jobs.dispatcher import SHUTDOWN_ERROR
from studio_worker.jobs.journal import REPLAY_WINDOW_S
from studio_worker.protocol.backoff import BASE_BACKOFF_MS
from studio_worker.results.uploader import UPLOAD_ATTEMPTS, UPLOAD_RETRY_PAUSE_S
from studio_worker.session.attempt import DEAD_LINK_CLOSE_S, Timing
from studio_worker.session.connect import CLOSE_TIMEOUT_S, CONNECT_TIMEOUT_S
from studio_worker.session.outbox import HOLD_S
from studio_worker.studio.records import JobStatus

SMALL_IMAGE = {"kind": "image", "prompt": "a lantern", "ext": "png", "width": 16, "height": 16}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with fault_rig(tmp_path) as r:
        yield r


def test_the_contract_clocks_are_the_defaults() -> None:
    """The rig shortens the clocks; the worker's own are the contract's (§3.1, §3.6, §2.3)."""
    timing = Timing()
    assert (timing.heartbeat_s, timing.log_flush_s, timing.read_idle_s) == (5.0, 1.0, 20.0)
    assert timing.shutdown_grace_s == 5.0
    assert (CONNECT_TIMEOUT_S, CLOSE_TIMEOUT_S) == (15.0, 5.0)
    assert (UPLOAD_ATTEMPTS, UPLOAD_RETRY_PAUSE_S) == (3, 1.0)


def test_a_result_held_over_a_half_open_link_leaves_inside_the_studio_hold() -> None:
    """Silence detected (20 s), the dead socket dropped (≤ 1 s), the first reconnect
    (1 s backoff): the result then waiting in the outbox is still sent (the outbox keeps
    job frames for 25 s of silence; the studio holds the job for 30 s, §3.6)."""
    connect_and_welcome = 2.0  # a generous loopback-to-studio handshake
    back = Timing().read_idle_s + DEAD_LINK_CLOSE_S + BASE_BACKOFF_MS / 1000 + connect_and_welcome
    assert back < HOLD_S == REPLAY_WINDOW_S < 30.0


async def test_half_open_socket_is_detected_and_the_result_leaves_on_the_next_session(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    with caplog.at_level(logging.INFO):
        rig.proxy.stall()  # both sockets stay open; nothing moves either way
        await rig.sessions(2)  # the read-idle timer noticed; a fresh socket is welcomed
    assert any("no frame from the studio for 2s" in r.getMessage() for r in caplog.records)
    rig.engine.release.set()
    job = await rig.outcome(job_id)
    assert (job.status, job.attempts, rig.deliveries(job_id)) == ("done", 0, 1)


@pytest.mark.parametrize("fault", ["drop", "truncate"])
async def test_a_connection_cut_mid_job_loses_nothing(rig: Rig, fault: str) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    if fault == "drop":
        rig.proxy.drop()  # RST both ways
    else:
        rig.proxy.truncate_next()  # half of the next studio frame, then the cut
    await rig.sessions(2)
    rig.engine.release.set()
    job = await rig.outcome(job_id)
    assert (job.status, job.attempts, rig.deliveries(job_id)) == ("done", 0, 1)


async def test_the_result_waits_out_a_studio_outage_shorter_than_its_hold(rig: Rig) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    rig.proxy.refuse = True
    rig.proxy.drop()
    rig.engine.release.set()  # the result is made while the studio is out of reach
    async with asyncio.timeout(10):
        while rig.daemon.status.snapshot().current_job is not None:
            await asyncio.sleep(0.02)
    rig.proxy.refuse = False
    await rig.sessions(2)
    job = await rig.outcome(job_id)
    assert (job.status, job.attempts, rig.deliveries(job_id)) == ("done", 0, 1)


@pytest.mark.parametrize(
    ("frame", "sessions"),
    [
        (text_frame('{"type": "offer", "claim": '), 1),  # malformed JSON
        (text_frame('{"type": "surprise", "jobId": "x"}'), 1),  # unknown type
        (binary_frame(b"\x00\x01\x02"), 1),  # binary: not part of the protocol
        # A header announcing 100 MiB: past the 64 MiB cap, the worker drops the socket
        # (1009) without reading the payload, and comes back.
        (b"\x81\x7f" + (100 * 1024 * 1024).to_bytes(8, "big") + b"{", 2),
    ],
    ids=["malformed", "unknown", "binary", "oversized"],
)
async def test_unreadable_frames_mid_job_lose_nothing(
    rig: Rig, frame: bytes, sessions: int
) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    assert rig.proxy.inject(frame) == 1
    if sessions == 1:
        rig.proxy.corrupt_next_text()  # and a heartbeatAck with its bytes mangled
    await rig.sessions(sessions)
    rig.engine.release.set()
    job = await rig.outcome(job_id)
    assert (job.status, job.attempts, rig.deliveries(job_id)) == ("done", 0, 1)
    opened = sum(1 for r in rig.proxy.requests if b"/connect" in r)
    assert opened == sessions  # the readable-but-wrong frames never cost the session


@pytest.mark.parametrize(("failures", "deliveries", "attempts"), [(2, 1, 0), (3, 2, 1)])
async def test_upload_5xx_then_the_studio_takes_it(
    rig: Rig, failures: int, deliveries: int, attempts: int
) -> None:
    rig.proxy.fail_http("/complete", [503] * failures)
    job_id = rig.studio.submit_job("image", SMALL_IMAGE)
    job = await rig.outcome(job_id)
    # ×2: the third try lands. ×3: the worker fails the job retryable, the studio
    # requeues it (one attempt spent) and the retry's upload lands.
    assert rig.proxy.failed_http == failures
    assert (job.status, job.attempts, rig.deliveries(job_id)) == ("done", attempts, deliveries)
    assert job.size and job.mime == "image/png"


async def test_revoked_mid_job_the_job_goes_back_and_the_worker_stops(rig: Rig) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    await rig.studio.revoke(rig.worker_id)  # `error auth_failed` then close 4001
    assert await asyncio.wait_for(rig.task, 20) == EXIT_AUTH_FAILED
    job = rig.studio.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == ("queued", 0)
    assert rig.deliveries(job_id) == 0  # the worker never answers for a job taken back


@pytest.mark.parametrize(
    ("error", "code"),
    [("protocol_violation", EXIT_FATAL), ("internal_error", EXIT_FATAL)],
)
async def test_an_error_frame_mid_job_ends_the_worker_and_the_job_is_not_lost(
    rig: Rig, error: str, code: int
) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    rig.proxy.inject(text_frame(f'{{"type":"error","code":"{error}","message":"injected"}}'))
    assert await asyncio.wait_for(rig.task, 20) == code
    # The worker's outcome is owed, not lost: journaled for its next start ...
    journal = rig.daemon.config_path.parent / "jobs"
    assert len(list(journal.glob("*.json"))) == 1
    # ... and the studio holds the job until its hold runs out, then requeues it.
    job = rig.studio.get_job(job_id)
    assert job is not None and job.status is JobStatus.RUNNING
    rig.studio.hub.stale_after = 0.0
    await asyncio.sleep(0.01)
    await rig.studio.hub.sweep()
    job = rig.studio.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == ("queued", 1)
    assert rig.deliveries(job_id) == 0


async def test_stop_during_a_job_that_finishes_within_the_grace(rig: Rig) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    session = rig.studio.hub.session(rig.worker_id)
    assert session is not None
    rig.daemon.stop.set()  # what SIGTERM does
    await asyncio.sleep(0.2)
    offered = rig.studio.submit_job("llm", {"kind": "llm", "messages": []})  # not taken now
    rig.engine.release.set()
    assert await asyncio.wait_for(rig.task, 20) == 0
    job = await rig.outcome(job_id)
    assert (job.status, rig.deliveries(job_id)) == ("done", 1)
    assert session.ws.close_code == 1000
    late = rig.studio.get_job(offered)
    assert late is not None and late.status == "queued" and late.attempts == 0


async def test_stop_during_a_job_that_outlives_the_grace_fails_it_retryable(rig: Rig) -> None:
    job_id = rig.submit_gated()
    await rig.running(job_id)
    session = rig.studio.hub.session(rig.worker_id)
    assert session is not None
    rig.daemon.stop.set()
    assert await asyncio.wait_for(rig.task, 20) == 0
    job = rig.studio.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, rig.deliveries(job_id)) == ("queued", 1, 1)
    (record,) = rig.daemon.status.snapshot().recent_jobs
    assert (record.job_id, record.outcome, record.error) == (job_id, "failed", SHUTDOWN_ERROR)
    assert session.ws.close_code == 1000
