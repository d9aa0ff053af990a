"""The upstream seam over HTTP/1.1 on httptools' parser (llhttp, as uvicorn's server side uses): the default client.

It does only what a reverse proxy needs of a client: a request head written from the bytes the gateway already has
(no re-encoding of header values, no auto-added headers to strip again, no cookie jar, no redirects), the response
parsed in C, and its body handed over as it arrives. aiohttp does all of that and much that a proxy never uses, and
on a proxied request that costs more than the gateway's own tracing does: docs/performance.md has the counts.
`GATEWAY_UPSTREAM_CLIENT=aiohttp` (or `httpx`) selects the general-purpose clients instead.

Connections are pooled per upstream (scheme, host, port), most recently used first, at most `max_connections` open
at once across all upstreams (as aiohttp's `limit`); a request that finds none free waits, within its timeout. A
connection goes back to the pool only when both messages ended cleanly and the upstream did not ask to close it; one
idle for longer than IDLE_SECONDS is closed instead of used. A request without a body that finds its pooled connection
closed by the upstream before any answer (a keep-alive race every client meets) is sent again on a new connection;
one with a body is not (it is streamed, and gone), and fails with PooledConnectionClosed: a caller holding the whole
body, as the span reporter does, may send it again.

The timeout bounds connecting, the wait for the response head, and each wait for more of the body (aiohttp's
`sock_connect` and `sock_read`). Reading pauses while HIGH_WATER bytes of body are buffered unread, so a slow client
holds back its own upstream connection and nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import httptools

from gateway.proxy import UpstreamError, UpstreamRequest, UpstreamTimeout, UpstreamUnreachable

IDLE_SECONDS = 15.0  # aiohttp's keep-alive default; meshed upstreams (and uvicorn's 5 s) usually close sooner
HIGH_WATER = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024  # an upstream's response head beyond this is refused, as aiohttp's limits would
# Methods that carry no body by definition: a bodiless request with any other method says so with Content-Length: 0.
_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CONTENT_LENGTH = b"content-length"
_HOST = b"host"
_LAST_CHUNK = b"0\r\n\r\n"

Key = tuple[str, str, int]


class PooledConnectionClosed(UpstreamError):
    """A pooled connection closed before any byte of the answer: most likely the upstream closed it while idle as the
    request went out (the keep-alive race), so a caller that holds the whole body may send it again on a new one."""


class Http1Upstream:
    """A keep-alive pool of HTTP/1.1 connections to the upstreams; `forward` returns at the response's head."""

    def __init__(self, timeout: float, max_connections: int) -> None:
        self._timeout = timeout
        self._max_connections = max_connections
        self._idle: dict[Key, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def forward(self, request: UpstreamRequest) -> Http1Response:
        timeout = self._timeout if request.timeout is None else request.timeout
        key, authority, target = _split_url(request.url)
        head, chunked = _request_head(request, authority, target)
        while True:
            connection = await self._connection_for(key, timeout)
            reused = connection.exchanges > 0
            try:
                await connection.exchange(head, request.body, chunked, timeout)
            except _StaleConnection:
                if reused and request.body is None:
                    continue  # the upstream closed it while it sat in the pool; nothing was sent that it read
                error = PooledConnectionClosed if reused else UpstreamError
                raise error("upstream failed: connection closed before the response") from None
            return Http1Response(self, connection, timeout)

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    async def _connection_for(self, key: Key, timeout: float) -> _Connection:
        if self._closed:
            raise UpstreamUnreachable("upstream client closed")
        loop = asyncio.get_running_loop()
        deadline = None
        while True:
            idle = self._idle.get(key)
            if idle:
                now = loop.time()
                while idle:
                    connection = idle.pop()
                    if connection.reusable and now - connection.idle_since < IDLE_SECONDS:
                        return connection
                    connection.close()
            if len(self._open) >= self._max_connections:
                self._close_an_idle_connection()
            if len(self._open) < self._max_connections:
                return await self._connect(key, timeout)
            # Every connection is busy: wait for a release, within the request's timeout.
            if deadline is None:
                deadline = loop.time() + timeout
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamTimeout("upstream timed out")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                raise UpstreamTimeout("upstream timed out") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _close_an_idle_connection(self) -> None:
        # Room for another upstream's connection: the pool's limit is shared, as aiohttp's is.
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()
                return

    async def _connect(self, key: Key, timeout: float) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        connection = _Connection(self, key, loop)
        self._open.add(connection)
        tls = self._tls_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: connection, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            connection.close()
            raise UpstreamTimeout("upstream timed out") from None
        # UnicodeError: a host name the IDNA codec cannot encode (a label over 63 characters), which getaddrinfo
        # raises as it is: no such name, as for one that does not resolve.
        except (OSError, ssl.SSLError, UnicodeError) as exc:
            connection.close()
            raise UpstreamUnreachable("upstream unreachable") from exc
        except BaseException:
            connection.close()  # cancelled, perhaps once connected: the socket must not outlive the request
            raise
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()  # the system's trust store, hostnames checked, as aiohttp's
        return self._tls

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = connection.loop.time()
            self._idle.setdefault(connection.key, []).append(connection)
        else:
            # Left before its end (the client went away, an error), or the upstream asked to close it.
            connection.close()
        self._wake_a_waiter()

    def _forget(self, connection: _Connection) -> None:
        """A connection has closed: it leaves the pool, and makes room for a waiting request."""
        if connection in self._open:
            self._open.discard(connection)
            idle = self._idle.get(connection.key)
            if idle and connection in idle:
                idle.remove(connection)
            self._wake_a_waiter()

    def _wake_a_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class Http1Response:
    __slots__ = ("_connection", "_released", "_timeout", "_upstream", "headers", "status_code")

    def __init__(self, upstream: Http1Upstream, connection: _Connection, timeout: float) -> None:
        self._upstream = upstream
        self._connection = connection
        self._timeout = timeout
        self._released = False
        self.status_code = connection.status
        self.headers = connection.headers

    async def body(self) -> AsyncGenerator[bytes, None]:
        connection = self._connection
        while True:
            chunk = connection.take()
            if chunk:
                yield chunk
            elif connection.finished:
                return
            else:
                await connection.more_body(self._timeout)

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        connection = self._connection
        connection.active = False
        self._upstream._release(connection)


class _StaleConnection(Exception):
    """The connection closed before any byte of the response came back."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to an upstream, one exchange at a time; httptools calls its `on_*` methods."""

    def __init__(self, upstream: Http1Upstream, key: Key, loop: asyncio.AbstractEventLoop) -> None:
        self.upstream = upstream
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchanges = 0
        self.idle_since = 0.0
        self.active = False  # between the request's head going out and the response's release
        self.sending: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.finished = False
        self.head_done = False
        self._keep_alive = False
        self._head_only = False
        self._received = False
        self._head_bytes = 0
        self._head_bytes_read = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._read_paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._body_error: BaseException | None = None

    # The exchange, from the request's side.

    @property
    def reusable(self) -> bool:
        """Both messages ended cleanly, the upstream keeps the connection open, and nothing is left to read."""
        transport = self.transport
        return (
            self.finished
            and self._keep_alive
            and self.sending is None
            and self._body_error is None
            and transport is not None
            and not transport.is_closing()
        )

    async def exchange(self, head: bytes, body: AsyncIterator[bytes] | None, chunked: bool, timeout: float) -> None:
        """Sends the request and returns at the final response's head; raises the gateway's errors."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.close()
            raise _StaleConnection
        self.exchanges += 1
        self.active = True
        if self._read_paused:
            transport.resume_reading()  # the last response ended with its body unread: this one must be read
        self._reset_exchange()
        self._head_only = head.startswith(b"HEAD ")
        transport.write(head)
        if body is not None:
            self.sending = self.loop.create_task(self._send_body(body, chunked))
        try:
            await self._wait(timeout)
        except BaseException:
            self.close()
            raise
        if not self.head_done:
            raise self._failure()

    async def more_body(self, timeout: float) -> None:
        if self.transport is None or self._error is not None:
            # Lost or failed before this wait began: its wake-up has been and gone.
            if not self.finished and not self._chunks:
                raise self._failure()
            return
        try:
            await self._wait(timeout)
        except BaseException:
            self.close()
            raise
        if not self.finished and not self._chunks:
            raise self._failure()

    def take(self) -> bytes:
        chunks = self._chunks
        if not chunks:
            return b""
        chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return chunk

    async def _wait(self, timeout: float) -> None:
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _failure(self) -> BaseException:
        if self._body_error is not None:
            return self._body_error  # the client's own request body failed (it went away): not the upstream's fault
        if self._error is not None:
            return self._error
        if not self._received:
            return _StaleConnection()
        return UpstreamError("upstream failed: connection closed mid-response")

    async def _send_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            async for chunk in body:
                if transport.is_closing():
                    return
                if not chunk:
                    continue  # an empty chunk would be the chunked body's end
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self._write_paused:
                    self._drained = self.loop.create_future()
                    await self._drained
            if chunked and not transport.is_closing():
                transport.write(_LAST_CHUNK)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._body_error = exc
            self.close()
        finally:
            self.sending = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # asyncio's protocol callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.close()  # an idle connection has nothing to read: whatever the upstream sent, it is not reusable
            return
        self._received = True
        if not self.head_done:
            # httptools buffers a header line until it ends: a line that never does is bounded here.
            self._head_bytes_read += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("upstream failed: it switched protocols on a plain HTTP request"))
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ or exc.__context__
            error = cause if isinstance(cause, UpstreamError) else UpstreamError("upstream failed: malformed response")
            self._fail(error)
            return
        if not self.head_done and self._head_bytes_read > MAX_HEAD_BYTES:
            self._fail(UpstreamError("upstream failed: response head too large"))

    def eof_received(self) -> bool | None:
        return None  # closes the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.head_done and not self.finished and self._error is None and self._reads_to_close():
            self._finish()  # a body delimited by the connection's close (RFC 9112 6.3, point 8) ends here
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.upstream._forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def close(self) -> None:
        if self.sending is not None:
            self.sending.cancel()
        if self.transport is not None:
            self.transport.close()
        self.upstream._forget(self)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _reads_to_close(self) -> bool:
        return not any(name in (_CONTENT_LENGTH, b"transfer-encoding") for name, _ in self.headers)

    def _finish(self) -> None:
        self.finished = True
        self._wake()

    # httptools' parser callbacks.

    def on_message_begin(self) -> None:
        if self.finished:
            # More after the response's end, which nothing asked for: the connection cannot be trusted again.
            raise UpstreamError("upstream failed: it sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise UpstreamError("upstream failed: response head too large")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:
            raise UpstreamError("upstream failed: it switched protocols on a plain HTTP request")
        if 100 <= status < 200 and status != 101:
            # An interim response (100 Continue, 103 Early Hints): the final one follows on the same connection.
            self.headers = []
            self._head_bytes = self._head_bytes_read = 0
            return
        self.status = status
        self.head_done = True
        if self._head_only:
            # llhttp cannot be told that a response to HEAD has no body, whatever its Content-Length says: it ends
            # here, and the connection is not reused, its parser's state being unknowable.
            self.finished = True
            if self.transport is not None:
                self.transport.close()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.finished:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done or self.finished:
            return
        self.finished = True
        self._keep_alive = self.parser.should_keep_alive()
        self._wake()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("upstream timed out"))


@functools.lru_cache(maxsize=256)
def _authority(scheme: str, authority: str) -> tuple[Key, bytes]:
    if authority.startswith("["):  # an IPv6 literal: [::1] or [::1]:8080
        end = authority.find("]")
        host, after = authority[1:end], authority[end + 1 :]
        port_text = after.removeprefix(":")
        well_formed = end > 0 and (not after or after.startswith(":"))
    else:
        host, _, port_text = authority.partition(":")
        well_formed = True
    if not (well_formed and host and (not port_text or (port_text.isdigit() and 0 < int(port_text) < 65536))):
        raise UpstreamError(f"request not sendable upstream: bad authority {authority[:80]!r}")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    return (scheme, host, port), authority.encode("ascii")


def _split_url(url: str) -> tuple[Key, bytes, bytes]:
    """The pool key, the Host header's value and the request target of an absolute http(s) URL."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in ("http", "https"):
        raise UpstreamError(f"request not sendable upstream: not an http(s) URL: {url[:80]!r}")
    end = len(rest)
    for mark in "/?":
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    authority, target = rest[:end], rest[end:]
    if not target.startswith("/"):
        target = "/" + target  # an empty path is "/" (RFC 9112 3.2.1), before any query
    key, host_header = _authority(scheme, authority)
    return key, host_header, target.encode("latin-1")


def _request_head(request: UpstreamRequest, authority: bytes, target: bytes) -> tuple[bytes, bool]:
    """The request's head, and whether its body goes chunked (it has one, of no declared length)."""
    method = request.method
    lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), target)]
    has_host = has_length = False
    for name, value in request.headers:
        # By length first: the gateway's names are ASGI's, lowercase, but the seam takes any case.
        if len(name) == 4 and name.lower() == _HOST:
            has_host = True
        elif len(name) == 14 and name.lower() == _CONTENT_LENGTH:
            has_length = True
        lines.append(name + b": " + value)
    if not has_host:
        lines.append(b"host: " + authority)
    chunked = request.body is not None and not has_length
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    elif request.body is None and not has_length and method not in _BODILESS_METHODS:
        lines.append(b"content-length: 0")
    lines.append(b"\r\n")
    head = b"\r\n".join(lines)
    # What the gateway sends must be the lines it means: a CR, LF or NUL inside a name or value would split one
    # (the client's own fields were checked by uvicorn's parser; this guards what the gateway and routes add).
    if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines) or b"\x00" in head:
        raise UpstreamError("request not sendable upstream: a header holds a line break")
    return head, chunked
