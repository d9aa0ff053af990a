"""Purpose-built fault servers on loopback, each an asyncio server in a thread of the test process.

`CollectorProxy` sits between the gateway and the real collector and, request by request, passes a span POST on or
fails it the way a collector can: refusing connections, accepting and never answering, resetting the connection
mid-POST, answering a status. `FaultyUpstream` is an upstream that misbehaves on purpose, path by path, and records
what reached it and whether the gateway abandoned the call. Both are plain HTTP/1.1 over raw sockets: a reset needs
SO_LINGER, and a truncated response needs a server that lies about its Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from tests.support import LOOPBACK, free_port

T = TypeVar("T")
MAX_HEAD = 256 * 1024
CHUNK = 64 * 1024


class BackgroundLoop:
    """An asyncio loop in a daemon thread; `call` runs a coroutine there and waits for its result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(cancel_all(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes  # the raw request line and header lines, as received

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def query(self, name: str, default: str = "") -> str:
        return parse_qs(urlsplit(self.target).query).get(name, [default])[0]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class PeerGone(Exception):
    pass


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, str, str, list[tuple[str, str]]] | None:
    """The next request head on the connection, or None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise PeerGone from exc
    except (asyncio.LimitOverrunError, ConnectionError) as exc:
        raise PeerGone from exc
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return head, method, target, headers


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    """A Content-Length or chunked body, whole; PeerGone if the peer leaves before its end."""
    lookup = {name.lower(): value for name, value in headers}
    try:
        if lookup.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return bytes(body)
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        length = int(lookup.get("content-length", "0"))
        return await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise PeerGone from exc


def reset(writer: asyncio.StreamWriter) -> None:
    """Closes the connection with a TCP RST rather than a FIN (SO_LINGER with a zero timeout)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def wait_until_closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the peer closes the connection (or resets it), False if it is still open after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(CHUNK):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


class _Server:
    """Accepts connections on a fixed port, which it can stop listening on (refusing) and take up again."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.background = BackgroundLoop(name)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections_opened = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    def listen(self) -> None:
        async def start() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port, reuse_address=True)

        self.background.call(start())

    def refuse(self) -> None:
        """Stops listening and drops every open connection: new connections are refused."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                reset(writer)

        self.background.call(stop())

    def close(self) -> None:
        self.refuse()
        self.background.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections_opened += 1
        try:
            await self.handle(reader, writer)
        except (PeerGone, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


# --- the collector's stand-in --------------------------------------------------------------------------


class CollectorFault(Enum):
    PASS = "pass"  # on to the real collector
    REFUSE = "refuse"  # not listening
    BLACKHOLE = "blackhole"  # accepts and reads the POST, never answers
    RESET = "reset"  # reads the POST's head, then resets the connection before its body is read
    STATUS = "status"  # answers `status` without passing the POST on


@dataclass
class SpanPost:
    """One POST of spans that reached the proxy, and what the proxy did with it."""

    fault: CollectorFault
    trace_ids: list[str]
    at: float


@dataclass
class _Plan:
    fault: CollectorFault = CollectorFault.PASS
    status: int = 503
    remaining: int | None = None  # posts left under `fault` before going back to PASS; None = until changed


class CollectorProxy(_Server):
    """The collector as the gateway sees it: POSTs go on to `target_port`, or fail as planned."""

    def __init__(self, target_port: int) -> None:
        super().__init__("collector-proxy")
        self.target_port = target_port
        self.posts: list[SpanPost] = []
        self._plan = _Plan()
        self._lock = threading.Lock()
        self.listen()

    @property
    def spans_url(self) -> str:
        return f"{self.url}/api/v2/spans"

    def fail(self, fault: CollectorFault, status: int = 503, times: int | None = None) -> None:
        """Fail the next `times` POSTs (all of them if None) with `fault`; REFUSE also stops listening."""
        with self._lock:
            self._plan = _Plan(fault, status, times)
        if fault is CollectorFault.REFUSE:
            self.refuse()
        else:
            self.listen()

    def heal(self) -> None:
        self.fail(CollectorFault.PASS)

    def posts_under(self, fault: CollectorFault) -> list[SpanPost]:
        return [post for post in list(self.posts) if post.fault is fault]

    def _next_fault(self) -> _Plan:
        with self._lock:
            plan = self._plan
            if plan.remaining is not None:
                plan.remaining -= 1
                if plan.remaining <= 0:
                    self._plan = _Plan()
            return plan

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (parsed := await read_head(reader)) is not None:
            head, _, _, headers = parsed
            plan = self._next_fault()
            if plan.fault is CollectorFault.RESET:
                self.posts.append(SpanPost(plan.fault, [], time.monotonic()))
                reset(writer)
                return
            body = await read_body(reader, headers)
            self.posts.append(SpanPost(plan.fault, _trace_ids(body, headers), time.monotonic()))
            if plan.fault is CollectorFault.BLACKHOLE:
                await wait_until_closed(reader, timeout=3600)
                return
            if plan.fault is CollectorFault.STATUS:
                text = b"refused on purpose\n"
                writer.write(response_head(plan.status, [("content-length", str(len(text)))]) + text)
            else:
                writer.write(await self._pass_on(head, body))
            await writer.drain()

    async def _pass_on(self, head: bytes, body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        try:
            writer.write(head + body)
            await writer.drain()
            parsed = await _read_response(reader)
        finally:
            writer.close()
        return parsed


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


def _trace_ids(body: bytes, headers: list[tuple[str, str]]) -> list[str]:
    encoding = {name.lower(): value for name, value in headers}.get("content-encoding", "")
    try:
        spans = json.loads(gzip.decompress(body) if encoding == "gzip" else body)
        return sorted({str(span["traceId"]).rjust(32, "0") for span in spans})
    except (ValueError, KeyError, TypeError, OSError):
        return []


# --- the upstream that misbehaves ----------------------------------------------------------------------


@dataclass
class UpstreamCall:
    request: Request
    events: list[str] = field(default_factory=list)  # "started", then "completed" or "abandoned"


Behaviour = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter, UpstreamCall], Awaitable[bool]]


class FaultyUpstream(_Server):
    """An upstream that fails on purpose, by path (`?token=` names a call for `call(token)`):

    /ok                           200, a short body
    /status/<code>                that status, a short body
    /reset-before-response        reads the request, then resets the connection
    /reset-mid-response?sent=N    announces 1 MiB, sends N bytes, then resets the connection
    /slow?seconds=S               answers after S seconds (or notes that the caller went away first)
    /stall?sent=N                 announces 1 MiB, sends N bytes, then sends nothing more
    /huge?size=N                  N bytes, streamed as the caller reads them (never held in memory)
    /endless                      a chunked body that never ends
    /upload                       reads the whole body and answers its length
    anything else                 200, echoes the request head as JSON
    """

    def __init__(self) -> None:
        super().__init__("faulty-upstream")
        self.calls: list[UpstreamCall] = []
        self.listen()

    def call(self, token: str) -> UpstreamCall | None:
        for call in list(self.calls):
            if call.request.query("token") == token:
                return call
        return None

    def wait_for(self, token: str, event: str, timeout: float = 10.0) -> list[str]:
        """The events of call `token` once `event` is among them, or after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            call = self.call(token)
            if call is not None and event in call.events:
                return list(call.events)
            time.sleep(0.02)
        call = self.call(token)
        return list(call.events) if call is not None else []

    def paths(self) -> list[str]:
        return [call.request.path for call in list(self.calls)]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (parsed := await read_head(reader)) is not None:
            head, method, target, headers = parsed
            call = UpstreamCall(Request(method, target, headers, b"", head), ["started"])
            self.calls.append(call)
            path = call.request.path
            behaviour = _BEHAVIOURS.get(path) or (_status if path.startswith("/status/") else _echo)
            try:
                if path != "/upload":
                    call.request.body = await read_body(reader, headers)
                keep_open = await behaviour(call.request, reader, writer, call)
            except (PeerGone, ConnectionError):
                call.events.append("abandoned")
                return
            if not keep_open:
                return


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = "text/plain") -> None:
    writer.write(response_head(status, [("content-type", content_type), ("content-length", str(len(body)))]) + body)
    await writer.drain()


async def _echo(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    payload = {
        "method": request.method,
        "target": request.target,
        "head": request.head.decode("latin-1"),
        "body_length": len(request.body),
    }
    await _respond(writer, 200, json.dumps(payload).encode(), "application/json")
    call.events.append("completed")
    return True


async def _ok(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall) -> bool:
    await _respond(writer, 200, b"ok\n")
    call.events.append("completed")
    return True


async def _status(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    await _respond(writer, int(request.path.removeprefix("/status/")), b"upstream says no\n")
    call.events.append("completed")
    return True


async def _reset_before_response(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    reset(writer)
    call.events.append("reset")
    return False


async def _send_part_of_a_response(request: Request, writer: asyncio.StreamWriter) -> None:
    """A 200 that promises 1 MiB and sends the first ``?sent=`` bytes of it (1000 unless said)."""
    sent = int(request.query("sent", "1000"))
    writer.write(response_head(200, [("content-length", str(1024 * 1024))]) + b"x" * sent)
    await writer.drain()


async def _reset_mid_response(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    await _send_part_of_a_response(request, writer)
    await asyncio.sleep(0.2)
    reset(writer)
    call.events.append("reset")
    return False


async def _slow(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    if await wait_until_closed(reader, float(request.query("seconds", "5"))):
        call.events.append("abandoned")
        return False
    await _respond(writer, 200, b"slow\n")
    call.events.append("completed")
    return True


async def _stall(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    await _send_part_of_a_response(request, writer)
    if await wait_until_closed(reader, 60):
        call.events.append("abandoned")
    return False


async def _huge(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    size = int(request.query("size"))
    writer.write(response_head(200, [("content-type", "application/octet-stream"), ("content-length", str(size))]))
    block = bytes(range(256)) * (CHUNK // 256)
    left = size
    while left > 0:
        piece = block if left >= CHUNK else block[:left]
        writer.write(piece)
        left -= len(piece)
        await writer.drain()  # as fast as the caller reads, and no faster: nothing piles up here either
    call.events.append("completed")
    return True


async def _endless(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    writer.write(response_head(200, [("transfer-encoding", "chunked")]))
    block = b"%x\r\n%s\r\n" % (CHUNK, b"e" * CHUNK)
    while not writer.transport.is_closing():
        writer.write(block)
        await writer.drain()
    call.events.append("abandoned")
    return False


async def _upload(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: UpstreamCall
) -> bool:
    request.body = await read_body(reader, request.headers)
    await _respond(writer, 200, str(len(request.body)).encode())
    call.events.append("completed")
    return True


_BEHAVIOURS: dict[str, Behaviour] = {
    "/ok": _ok,
    "/reset-before-response": _reset_before_response,
    "/reset-mid-response": _reset_mid_response,
    "/slow": _slow,
    "/stall": _stall,
    "/huge": _huge,
    "/endless": _endless,
    "/upload": _upload,
}
