"""Loopback HTTP/1.1 servers for client tests, answering with scripted raw bytes.

Each is an asyncio server listening on 127.0.0.1 on a free port: each accepted connection is a `Peer` that parses what
the client sent (httptools' request parser, so chunked bodies come out de-chunked) and keeps the raw bytes besides.
A test writes its server's behaviour as a `Handler` of one connection, and stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import pytest

from tests.support import LOOPBACK
from tests.tls_support import CertificateFactory

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# The fixtures every module of these scenarios imports: both event loops (uvloop's transports are not
# asyncio.Transport subclasses), and no error logged by the loop. Named apart from their fixture names, so that a
# test can take `anyio_backend` without shadowing an import.


@pytest.fixture(
    name="anyio_backend",
    params=[pytest.param("asyncio", id="asyncio"), pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")],
)
def on_both_event_loops(request: pytest.FixtureRequest) -> object:
    return request.param


@pytest.fixture(name="nothing_logged_by_asyncio", autouse=True)
def asyncio_logs_nothing(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """An exception escaping a protocol callback, or a task's never retrieved, is logged by the loop: none may be."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    errors = [record.getMessage() for record in caplog.records if record.name == "asyncio"]
    assert errors == []


@dataclass
class Received:
    method: bytes = b""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    head_complete: bool = False
    complete: bool = False


class Peer:
    """One connection the server accepted: the requests parsed from it, and every byte the client sent on it."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.raw = bytearray()
        self.requests: list[Received] = []  # every request begun, complete or not
        self.eof = asyncio.Event()  # the client closed its side (or reset the connection)
        self.finished = asyncio.Event()  # the handler returned and the server closed the connection
        self._parser = httptools.HttpRequestParser(self)
        self._next = 0  # the request that `request` or `head` returns next
        self.malformed: httptools.HttpParserError | None = None

    # httptools' callbacks.
    def on_message_begin(self) -> None:
        self.requests.append(Received())

    def on_url(self, url: bytes) -> None:
        self.requests[-1].target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.requests[-1].headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.requests[-1].method = self._parser.get_method()
        self.requests[-1].head_complete = True

    def on_body(self, body: bytes) -> None:
        self.requests[-1].body += body

    def on_message_complete(self) -> None:
        self.requests[-1].complete = True

    async def _receive(self) -> bytes:
        """The next bytes the client sent, kept in ``raw``; b"" (and ``eof`` set) once it has closed its side."""
        try:
            data = await self.reader.read(65536)
        except ConnectionError:
            data = b""
        if data:
            self.raw += data
        else:
            self.eof.set()
        return data

    async def _read(self) -> bool:
        data = await self._receive()
        if not data:
            return False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.malformed = exc  # what the client sent is not HTTP/1.1: the server closes the connection
            return False
        return True

    async def request(self) -> Received | None:
        """The next request, once complete; None when the client closed the connection first."""
        while not (len(self.requests) > self._next and self.requests[self._next].complete):
            if not await self._read():
                return None
        self._next += 1
        return self.requests[self._next - 1]

    async def head(self) -> Received:
        """The next request, once its head has come (its body perhaps still coming)."""
        while not (len(self.requests) > self._next and self.requests[self._next].head_complete):
            assert await self._read(), "the client closed the connection before sending a request head"
        self._next += 1
        return self.requests[self._next - 1]

    async def until_eof(self) -> None:
        """Reads (without parsing) until the client closes its side."""
        while await self._receive():
            pass

    async def write(self, data: bytes | memoryview) -> None:
        if self.writer.is_closing():
            # The client closed the connection: uvloop would raise RuntimeError at the write, asyncio would not.
            raise ConnectionResetError("the client closed the connection")
        self.writer.write(data)
        await self.writer.drain()


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.peers: list[Peer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None

    @property
    def connections(self) -> int:
        """How many connections the server has accepted."""
        return len(self.peers)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{LOOPBACK}:{self.port}{path}"

    def requests(self) -> list[Received]:
        return [request for peer in self.peers for request in peer.requests]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._handler(peer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client reset the connection, or `stop` ended the handler (its task must not end cancelled)
        finally:
            writer.close()
            peer.finished.set()

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0, ssl=tls)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


def answering(*responses: bytes) -> Handler:
    """Answers each request with these responses in turn, on whichever connection it comes; the last again and again."""
    answered = 0

    async def handle(peer: Peer) -> None:
        nonlocal answered
        while await peer.request() is not None:
            await peer.write(responses[min(answered, len(responses) - 1)])
            answered += 1

    return handle


def first_connection(first: Handler, then: bytes = OK) -> Handler:
    """``first`` on the first connection accepted; every later one answers each request with ``then``."""

    async def handle(peer: Peer) -> None:
        await (first if peer.index == 0 else answering(then))(peer)

    return handle


def ok(body: bytes = b"ok", *headers: bytes) -> bytes:
    head = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), head, body)


def server_tls(certificates: CertificateFactory, folder: Path) -> ssl.SSLContext:
    """A server's TLS context with a certificate for 127.0.0.1 issued by ``certificates``' CA."""
    pem = certificates.issue(LOOPBACK)
    (folder / "tls.crt").write_bytes(pem.cert)
    (folder / "tls.key").write_bytes(pem.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    return context
