"""Shared fixtures of the engine tests: tiny real models and a loopback HTTP server."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # `fixtures` is a package of the test tree
    sys.path.insert(0, str(TESTS))

from fixtures.tiny_models import (  # noqa: E402
    CHATML_TEMPLATE,
    write_tiny_gguf,
    write_tiny_whisper,
)

KWARGS_TEMPLATE = (
    "<|im_start|>system\n{{ greeting | default('none') }} {{ tone }}<|im_end|>\n" + CHATML_TEMPLATE
)
RAISING_TEMPLATE = "{{ raise_exception('only user messages, please') }}"


# -- models -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ggufs:
    plain: Path
    think: Path
    kwargs: Path
    raising: Path
    broken_syntax: Path
    no_template: Path
    bos_template: Path  # the template writes the BOS itself
    short_context: Path  # trained context 128
    other: Path  # same chain, another seed: a different model file


@pytest.fixture(scope="session")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> Ggufs:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("gguf", reason="gguf is not installed")
    root = tmp_path_factory.mktemp("gguf")
    return Ggufs(
        plain=write_tiny_gguf(root / "plain" / "tiny.gguf"),
        think=write_tiny_gguf(root / "think" / "tiny.gguf", think=True),
        kwargs=write_tiny_gguf(root / "kwargs" / "tiny.gguf", chat_template=KWARGS_TEMPLATE),
        raising=write_tiny_gguf(root / "raising" / "tiny.gguf", chat_template=RAISING_TEMPLATE),
        broken_syntax=write_tiny_gguf(
            root / "syntax" / "tiny.gguf", chat_template="{% for m in messages %}{{ m"
        ),
        no_template=write_tiny_gguf(root / "bare" / "tiny.gguf", chat_template=None),
        bos_template=write_tiny_gguf(
            root / "bos" / "tiny.gguf", chat_template="{{ bos_token }}" + CHATML_TEMPLATE
        ),
        short_context=write_tiny_gguf(root / "short" / "tiny.gguf", n_ctx=128),
        other=write_tiny_gguf(root / "other" / "tiny.gguf", seed=1, dtype="f16"),
    )


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    return write_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


# -- a loopback HTTP server ---------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True  # False: no Content-Length, the body ends when the socket does


@dataclass
class Served:
    base: str
    routes: dict[str, Route]
    hits: list[str]

    def add(self, path: str, body: bytes = b"", **kwargs: object) -> str:
        self.routes[path] = Route(body=body, **kwargs)  # type: ignore[arg-type]
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path.split("?")[0], Route(404, b"not here"))
        self.send_response(route.status)
        for key, value in route.headers.items():
            self.send_header(key, value)
        if route.send_length:
            self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    hits: list[str]


@pytest.fixture(scope="session")
def http_server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.routes, server.hits = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(http_server: _Server) -> Served:
    http_server.routes.clear()
    http_server.hits.clear()
    host, port = http_server.server_address[:2]
    return Served(f"http://{host!s}:{port}", http_server.routes, http_server.hits)
