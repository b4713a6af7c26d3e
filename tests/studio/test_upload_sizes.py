"""Result uploads small (held in memory) and large (streamed to a spool file) (§2.3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studio_worker.studio import StudioServer, worker_http

from .peers import IMAGE_TASK, Peer, expect, send


async def _upload(
    peer: Peer, worker_id: str, job_id: str, token: str, data: bytes, ext: str = "png"
) -> int:
    response = await peer.http.post(
        f"/graphics/api/workers/{worker_id}/jobs/{job_id}/complete",
        headers={"Authorization": f"Bearer {token}"},
        data={"prompt": "a lantern", "ext": ext},
        files={"image": (f"{job_id}.{ext}", data, "image/png")},
    )
    return response.status_code


@pytest.mark.parametrize("in_memory_limit", [1 << 20, 1000])
async def test_results_land_whole_whatever_their_size(
    peer: Peer, studio: StudioServer, monkeypatch: pytest.MonkeyPatch, in_memory_limit: int
) -> None:
    monkeypatch.setattr(worker_http, "IN_MEMORY_RESULT_BYTES", in_memory_limit)
    data = os.urandom(5000)  # over the lowered limit: streamed through the spool file
    worker_id, token, ws = await peer.worker_session()
    job_id = studio.submit_job("image", IMAGE_TASK)
    await expect(ws, "offer")
    await send(ws, {"type": "accept", "jobId": job_id})

    assert await _upload(peer, worker_id, job_id, token, data, ext="../x") == 400
    assert await _upload(peer, worker_id, job_id, token, data) == 200
    job = await studio.wait_for_job(job_id, 5)
    assert job.status == "done" and job.size == len(data) and job.result_path is not None
    assert Path(job.result_path).read_bytes() == data  # noqa: ASYNC240 - a small test file
    assert sorted(p.name for p in studio.results_dir.iterdir()) == [f"{job_id}.png"]
    await ws.close()


@pytest.mark.parametrize(
    ("header", "plain"),
    [
        ('form-data; name="image"; filename="job_1.png"', True),
        ('form-data; name="prompt"', True),
        ('form-data; name="ext"', True),
        ('form-data; name="image"; filename="a b (1).webp"', True),
        ('form-data; name=""', True),
        ('form-data; name="image"; filename="x%22y.png"', False),
        ("form-data; name=\"image\"; filename*=utf-8''%C3%A9.png", False),
        ("form-data; name=image", False),
        ('attachment; name="image"', False),
        ('form-data; name="a"; name="b"', False),
        ("", False),
    ],
)
def test_plain_part_names_read_like_the_full_parser(header: str, plain: bool) -> None:
    """Headers the fast path reads give the full parser's name; the rest go to it."""
    from aiohttp.multipart import content_disposition_filename, parse_content_disposition

    match = worker_http._PLAIN_DISPOSITION.fullmatch(header)
    assert (match is not None) == plain
    if match is not None:
        _, params = parse_content_disposition(header)
        assert match.group(1) == content_disposition_filename(params, "name")
