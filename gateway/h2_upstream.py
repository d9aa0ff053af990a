"""The upstream seam over HTTP/2 with prior knowledge (h2c), on the `h2` library: what gRPC services speak.

Connections are pooled per upstream authority, each carrying up to `max_streams` concurrent streams (fewer when the
peer's SETTINGS_MAX_CONCURRENT_STREAMS says so); more are opened up to `max_connections` per authority. Bodies stream
both ways under HTTP/2 flow control, full duplex: `forward` returns at the response headers while the request body
may still be going up, and received data is acknowledged only as the caller reads it, so a slow reader holds back
its own stream. Closing a response before its end resets the stream with CANCEL at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from gateway.h2_connection import Connection
from gateway.h2_upstream_stream import END, Stream, UpstreamReset
from gateway.proxy import UpstreamError, UpstreamRequest, UpstreamTimeout

__all__ = ["H2Response", "H2Upstream", "UpstreamReset"]


class H2Upstream:
    def __init__(self, timeout: float, max_connections: int, max_streams: int) -> None:
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_streams = max_streams
        self._pools: dict[tuple[str, int], list[Connection]] = {}
        self._released = asyncio.Event()  # replaced each time it fires, so waiters wake once per release

    async def forward(self, request: UpstreamRequest) -> H2Response:
        timeout = self._timeout if request.timeout is None else request.timeout
        parts = urlsplit(request.url)
        host, port = parts.hostname or "", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            async with asyncio.timeout(timeout):
                connection = await self._connection_for(host, port)
        except TimeoutError:
            raise UpstreamTimeout("upstream timed out") from None
        stream = connection.open_stream(request.method, path, request.headers, request.body is not None)
        if request.body is not None:
            stream.sender = asyncio.get_running_loop().create_task(connection.send_body(stream, request.body))
        try:
            async with asyncio.timeout(timeout):
                await stream.response_started.wait()
        except TimeoutError:
            connection.cancel(stream)
            raise UpstreamTimeout("upstream timed out") from None
        except BaseException:
            connection.cancel(stream)
            raise
        if stream.error is not None and stream.status_code is None:
            connection.cancel(stream)
            raise stream.error
        return H2Response(connection, stream, timeout)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            for connection in pool:
                await connection.close()
        self._pools.clear()

    async def _connection_for(self, host: str, port: int) -> Connection:
        pool = self._pools.setdefault((host, port), [])
        while True:
            pool[:] = [connection for connection in pool if connection.usable]
            for connection in pool:
                if connection.has_room():
                    return connection
            if len(pool) < self._max_connections:
                connection = Connection(self._max_streams, self._on_release)
                pool.append(connection)
                try:
                    await connection.connect(host, port)
                except BaseException:
                    pool.remove(connection)
                    raise
                finally:
                    self._on_release()  # whoever waited for this connection looks again
                continue
            # Every connection is full: wait until a stream ends somewhere (the caller's timeout bounds the wait).
            await self._released.wait()

    def _on_release(self) -> None:
        released, self._released = self._released, asyncio.Event()
        released.set()


class H2Response:
    """A response whose `trailers` are set once `body()` has ended."""

    __slots__ = ("_connection", "_stream", "_timeout", "headers", "status_code", "trailers")

    def __init__(self, connection: Connection, stream: Stream, timeout: float) -> None:
        self._connection = connection
        self._stream = stream
        self._timeout = timeout
        self.status_code = stream.status_code or 0
        self.headers = stream.headers
        self.trailers: list[tuple[bytes, bytes]] = []

    async def body(self) -> AsyncIterator[bytes]:
        stream = self._stream
        while True:
            if stream.data.empty():
                try:
                    async with asyncio.timeout(self._timeout):
                        item = await stream.data.get()
                except TimeoutError:
                    raise UpstreamTimeout("upstream timed out") from None
            else:
                item = stream.data.get_nowait()  # no timer for what has already arrived
            if item is END:
                self.trailers = stream.trailers
                return
            if isinstance(item, UpstreamError):
                raise item
            assert isinstance(item, bytes)
            # Acknowledged as it is read: the upstream may send more only as fast as the client takes it.
            self._connection.acknowledge(stream, len(item))
            yield item

    async def aclose(self) -> None:
        self._connection.cancel(self._stream)
