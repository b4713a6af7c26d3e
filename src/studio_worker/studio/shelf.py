"""The studio's file shelf: model files served to workers, with `Range` and sha256.

A self-hosted studio has no model registry on a CDN: the operator drops model files into
`<data dir>/files/` and model sources point at `<studio>/files/<name>`. Workers download
them like any registry file (https, or plain http on loopback), resume with `Range`, and
verify the sha256 the shelf computed. `GET /admin/files` lists each file as a ready-made
`ModelFile` object.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ShelfFile:
    name: str
    size: int
    sha256: str

    def model_file(self, base_url: str, role: str = "model") -> dict[str, Any]:
        return {
            "role": role,
            "url": f"{base_url}/files/{self.name}",
            "filename": self.name,
            "approxBytes": self.size,
            "sha256": self.sha256,
        }


class Shelf:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._hashes: dict[tuple[str, int, int], str] = {}
        self.requests: Counter[str] = Counter()  # name -> GETs served
        self.ranged: Counter[str] = Counter()  # name -> GETs that asked for a Range

    def path(self, name: str) -> Path | None:
        if not _PLAIN.match(name):
            return None
        path = self.root / name
        return path if path.is_file() else None

    def describe(self, name: str) -> ShelfFile:
        path = self.path(name)
        if path is None:
            raise FileNotFoundError(f"no file {name!r} on the shelf")
        stat = path.stat()
        key = (name, stat.st_size, stat.st_mtime_ns)
        digest = self._hashes.get(key)
        if digest is None:
            sha = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    sha.update(chunk)
            digest = self._hashes[key] = sha.hexdigest()
        return ShelfFile(name, stat.st_size, digest)

    def listing(self) -> list[ShelfFile]:
        names = sorted(p.name for p in self.root.iterdir() if p.is_file())
        return [self.describe(name) for name in names if _PLAIN.match(name)]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.path(name)
        if path is None:
            return web.json_response({"error": f"no file {name!r}"}, status=404)
        if request.method == "GET":
            self.requests[name] += 1
            if "Range" in request.headers:
                self.ranged[name] += 1
        return web.FileResponse(path, chunk_size=256 * 1024)
