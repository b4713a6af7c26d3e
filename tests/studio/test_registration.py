"""Register-request, poll and the per-IP rate limit (protocol §2.1-§2.2)."""

from __future__ import annotations

import secrets

import pytest

from studio_worker.protocol.registration import secret_hash
from studio_worker.studio import StudioServer

from .peers import Peer, caps


async def test_register_poll_approve_mints_fresh_tokens(peer: Peer, studio: StudioServer) -> None:
    request_id, secret = await peer.register()
    assert request_id.startswith("rr-")
    assert [r.id for r in studio.pending_requests()] == [request_id]

    assert (await peer.poll(request_id, secret)).json() == {"status": "pending"}

    worker_id = studio.approve(request_id)
    first = (await peer.poll(request_id, secret)).json()
    second = (await peer.poll(request_id, secret)).json()
    assert first["status"] == second["status"] == "approved"
    assert first["workerId"] == second["workerId"] == worker_id
    assert first["authToken"] != second["authToken"]
    assert studio.pending_requests() == []


async def test_poll_answers_404_for_unknown_and_401_for_wrong_secret(peer: Peer) -> None:
    request_id, _secret = await peer.register()
    assert (await peer.poll("rr-nope", "x" * 64)).status_code == 404
    assert (await peer.poll(request_id, "y" * 64)).status_code == 401
    no_auth = await peer.http.get(f"/graphics/api/workers/register-requests/{request_id}")
    assert no_auth.status_code == 401


async def test_reject_reports_reason(peer: Peer, studio: StudioServer) -> None:
    request_id, secret = await peer.register()
    studio.reject(request_id, "unknown contributor")
    body = (await peer.poll(request_id, secret)).json()
    assert body == {"status": "rejected", "reason": "unknown contributor"}


async def test_pending_request_is_deduplicated_per_install(
    peer: Peer, studio: StudioServer
) -> None:
    first, _ = await peer.register(install_id="5c0e9f1a-7b2d-4c83-9e16-0a4f7d2b8c91")
    again, secret = await peer.register(install_id="5c0e9f1a-7b2d-4c83-9e16-0a4f7d2b8c91")
    assert again == first
    assert len(studio.pending_requests()) == 1
    # The newest asker's secret is the one that polls.
    assert (await peer.poll(first, secret)).json() == {"status": "pending"}


async def test_invalid_body_is_400(peer: Peer) -> None:
    body = {"installId": "x", "registrationSecretHash": "not-hex", "capabilities": caps()}
    r = await peer.http.post("/graphics/api/workers/register-request", json=body)
    assert r.status_code == 400
    r = await peer.http.post("/graphics/api/workers/register-request", content=b"{")
    assert r.status_code == 400


@pytest.mark.parametrize("studio_kwargs", [{"register_limit": 3}])
async def test_register_is_rate_limited_per_ip(peer: Peer) -> None:
    for _ in range(3):
        await peer.register()
    body = {
        "installId": "another",
        "registrationSecretHash": secret_hash(secrets.token_hex(32)),
        "capabilities": caps(),
        "userAgent": "studio-worker/0.5.0",
    }
    r = await peer.http.post("/graphics/api/workers/register-request", json=body)
    assert r.status_code == 429
