"""The studio's file shelf: model files with sizes, sha256 and Range."""

from __future__ import annotations

import hashlib
import os

import httpx

from studio_worker.domain.tasks import ModelFile
from studio_worker.studio import StudioServer


def put(studio: StudioServer, name: str, data: bytes) -> None:
    (studio.shelf.root / name).write_bytes(data)


async def test_lists_files_as_model_files_with_sha256(
    studio: StudioServer, admin: httpx.AsyncClient
) -> None:
    data = os.urandom(70_000)
    put(studio, "tiny.gguf", data)
    put(studio, ".hidden", b"x")
    response = await admin.get("/admin/files")
    assert response.status_code == 200
    (entry,) = response.json()["files"]
    parsed = ModelFile.model_validate(entry)
    assert parsed.filename == "tiny.gguf"
    assert parsed.sha256 == hashlib.sha256(data).hexdigest()
    assert parsed.approx_bytes == len(data)
    assert parsed.url == f"{studio.url}/files/tiny.gguf"
    assert studio.shelf_file("tiny.gguf", role="vae")["role"] == "vae"


async def test_listing_needs_the_admin_token(studio: StudioServer) -> None:
    async with httpx.AsyncClient(base_url=studio.url or "") as http:
        assert (await http.get("/admin/files")).status_code == 401


async def test_serves_whole_files_and_ranges_and_counts_them(studio: StudioServer) -> None:
    data = os.urandom(300_000)
    put(studio, "m.bin", data)
    async with httpx.AsyncClient(base_url=studio.url or "") as http:
        whole = await http.get("/files/m.bin")
        assert whole.status_code == 200 and whole.content == data
        tail = await http.get("/files/m.bin", headers={"Range": "bytes=1000-"})
        assert tail.status_code == 206
        assert tail.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        assert tail.content == data[1000:]
        assert (await http.get("/files/nope.bin")).status_code == 404
        assert (await http.get("/files/..%2Fstudio.sqlite3")).status_code == 404
    assert studio.shelf.requests["m.bin"] == 2
    assert studio.shelf.ranged["m.bin"] == 1
