"""A fault-injecting TCP proxy on loopback, WebSocket-aware on the studio → worker side.

Put it between the worker and the studio (the worker's `api_base_url` points at the
proxy) or between the worker and a file server. Every fault is a switch the test flips:

- `stall()` / `unstall()`: stop moving bytes in both directions on the connections open
  now, sockets left open — a half-open link as both ends see it (new connections flow).
- `drop()`: abort every open connection (RST), as a dead NAT or a pulled cable would.
- `refuse = True`: new connections are closed at once (the studio is down).
- `delay_s`: wait this long before forwarding each chunk; `rate_bps`: throttle to this
  many bytes a second (a slow download).
- `inject(frame)`: put raw frame bytes in front of the worker on every open WebSocket,
  at a frame boundary (see `text_frame`, `binary_frame`).
- `corrupt_next_text()`: flip bytes of the next text frame the studio sends.
- `truncate_next()`: forward half of the next studio frame, then abort the connection.

- `fail_http(path_part, [503, 503])`: answer the next POSTs whose request line holds
  `path_part` with these statuses instead of forwarding them (a sick studio upload).

`requests` keeps the head of each client request (to see `Range:` on a resumed download).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

CHUNK = 64 * 1024


def _frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked frame, as a server sends it (RFC 6455 §5.2)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def text_frame(text: str | bytes) -> bytes:
    return _frame(0x1, text.encode("utf-8") if isinstance(text, str) else text)


def binary_frame(data: bytes) -> bytes:
    return _frame(0x2, data)


def _frame_length(buf: bytes | bytearray) -> int | None:
    """Bytes in the first complete frame of `buf`, or None while it is incomplete."""
    if len(buf) < 2:
        return None
    masked, n = buf[1] & 0x80, buf[1] & 0x7F
    at = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = struct.unpack("!Q", buf[2:10])[0], 10
    total = at + (4 if masked else 0) + n
    return total if len(buf) >= total else None


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    stalled: asyncio.Event = field(default_factory=asyncio.Event)  # set = flowing
    websocket: bool = False
    injections: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stalled.set()

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.refuse = False
        self.delay_s = 0.0
        self.rate_bps: float | None = None
        self.requests: list[bytes] = []
        self.connections = 0
        self._corrupt_next = False
        self._truncate_next = False
        self._http_failures: list[tuple[bytes, int]] = []
        self.failed_http = 0
        self._new_link = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- faults -----------------------------------------------------------------------

    def stall(self) -> None:
        for link in self._links:
            link.stalled.clear()

    def unstall(self) -> None:
        for link in self._links:
            link.stalled.set()

    def drop(self) -> None:
        for link in list(self._links):
            link.abort()
        self._links.clear()

    def inject(self, frame: bytes) -> int:
        """Queue `frame` for every open WebSocket; returns how many will get it."""
        sockets = [link for link in self._links if link.websocket]
        for link in sockets:
            link.injections.append(frame)
        return len(sockets)

    def fail_http(self, path_part: str, statuses: list[int]) -> None:
        self._http_failures.extend((path_part.encode(), status) for status in statuses)

    def corrupt_next_text(self) -> None:
        self._corrupt_next = True

    def truncate_next(self) -> None:
        self._truncate_next = True

    @property
    def websockets(self) -> int:
        return sum(1 for link in self._links if link.websocket)

    async def wait_websockets(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while self.websockets < count:
                self._new_link.clear()
                await self._new_link.wait()

    # ---- plumbing -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        ups = asyncio.ensure_future(self._client_to_studio(link, reader))
        downs = asyncio.ensure_future(self._studio_to_client(link, up_reader))
        self._tasks.update((ups, downs))
        try:
            await asyncio.wait((ups, downs), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ups, downs):
                task.cancel()
            await asyncio.gather(ups, downs, return_exceptions=True)
            self._tasks.difference_update((ups, downs))
            self._links.discard(link)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pace(self, link: _Link, size: int) -> None:
        await link.stalled.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.rate_bps:
            await asyncio.sleep(size / self.rate_bps)
        await link.stalled.wait()

    async def _client_to_studio(self, link: _Link, reader: asyncio.StreamReader) -> None:
        head = True
        while data := await reader.read(CHUNK):
            if head or data.startswith(b"POST "):
                self.requests.append(bytes(data.split(b"\r\n\r\n", 1)[0]))
                head = False
                if await self._fail_request(link, reader, data):
                    return
            await self._pace(link, len(data))
            link.upstream.write(data)
            await link.upstream.drain()

    async def _fail_request(self, link: _Link, reader: asyncio.StreamReader, data: bytes) -> bool:
        line = data.split(b"\r\n", 1)[0]
        if not (self._http_failures and data.startswith(b"POST ")):
            return False
        part, status = self._http_failures[0]
        if part not in line:
            return False
        self._http_failures.pop(0)
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:  # take the whole request before answering
            more = await reader.read(CHUNK)
            if not more:
                break
            body += more
        self.failed_http += 1
        link.client.write(
            f"HTTP/1.1 {status} Injected\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
            "boom".encode()
        )
        with contextlib.suppress(Exception):
            await link.client.drain()
        return True

    async def _studio_to_client(self, link: _Link, reader: asyncio.StreamReader) -> None:
        buf = bytearray()
        # The response head first: a 101 makes the rest WebSocket frames.
        while b"\r\n\r\n" not in buf:
            data = await reader.read(CHUNK)
            if not data:
                return
            buf += data
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        await self._forward(link, head + b"\r\n\r\n")
        buf = bytearray(rest)
        if not head.startswith(b"HTTP/1.1 101"):
            await self._forward(link, bytes(buf))
            while data := await reader.read(CHUNK):
                await self._forward(link, data)
            return
        link.websocket = True
        self._new_link.set()
        pending = asyncio.ensure_future(reader.read(CHUNK))
        try:
            while True:
                while (size := _frame_length(buf)) is not None:
                    frame, buf = bytes(buf[:size]), buf[size:]
                    if not await self._studio_frame(link, frame):
                        return
                await self._flush_injections(link)
                waker = asyncio.ensure_future(asyncio.sleep(0.02))
                await asyncio.wait((pending, waker), return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if pending.done():
                    data = pending.result()
                    if not data:
                        await self._forward(link, bytes(buf))
                        return
                    buf += data
                    pending = asyncio.ensure_future(reader.read(CHUNK))
        finally:
            pending.cancel()

    async def _studio_frame(self, link: _Link, frame: bytes) -> bool:
        await self._flush_injections(link)
        opcode = frame[0] & 0x0F
        if self._truncate_next:
            self._truncate_next = False
            await self._forward(link, frame[: max(1, len(frame) // 2)])
            link.abort()
            return False
        if self._corrupt_next and opcode == 0x1:
            self._corrupt_next = False
            body = bytearray(frame)
            at = {126: 4, 127: 10}.get(frame[1] & 0x7F, 2)
            # Overwrite the payload's first bytes: still UTF-8, no longer JSON.
            body[at : at + 4] = b"####"[: len(body) - at]
            frame = bytes(body)
        await self._forward(link, frame)
        return True

    async def _flush_injections(self, link: _Link) -> None:
        while link.injections:
            await self._forward(link, link.injections.pop(0))

    async def _forward(self, link: _Link, data: bytes) -> None:
        if not data:
            return
        await self._pace(link, len(data))
        link.client.write(data)
        await link.client.drain()
