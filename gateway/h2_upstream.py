"""The upstream seam over HTTP/2 with prior knowledge (h2c), on the `h2` library: what gRPC services speak.

Connections are pooled per upstream authority, each carrying up to `max_streams` concurrent streams (fewer when the
peer's SETTINGS_MAX_CONCURRENT_STREAMS says so); more are opened up to `max_connections` per authority. Bodies stream
both ways under HTTP/2 flow control, full duplex: `forward` returns at the response headers while the request body
may still be going up, and received data is acknowledged only as the caller reads it, so a slow reader holds back
its own stream. Closing a response before its end resets the stream with CANCEL at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from gateway.proxy import UpstreamError, UpstreamRequest, UpstreamTimeout, UpstreamUnreachable

_READ_CHUNK = 64 * 1024
_STREAM_WINDOW = 1024 * 1024
_CONNECTION_WINDOW = 8 * 1024 * 1024
# Connection-specific header fields an HTTP/2 request must not carry (RFC 9113 8.2.2).
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_HOST = b"host"
_TE = b"te"
_TE_TRAILERS = (_TE, b"trailers")
_END = object()  # put on a stream's queue after its last data


class UpstreamReset(UpstreamError):
    """The upstream reset the stream (RST_STREAM); `error_code` is its HTTP/2 error code."""

    def __init__(self, error_code: int) -> None:
        super().__init__(f"upstream reset the stream ({_code_name(error_code)})")
        self.error_code = error_code


class H2Upstream:
    def __init__(self, timeout: float, max_connections: int, max_streams: int) -> None:
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_streams = max_streams
        self._pools: dict[tuple[str, int], list[_Connection]] = {}
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

    async def _connection_for(self, host: str, port: int) -> _Connection:
        pool = self._pools.setdefault((host, port), [])
        while True:
            pool[:] = [connection for connection in pool if connection.usable]
            for connection in pool:
                if connection.has_room():
                    return connection
            if len(pool) < self._max_connections:
                connection = _Connection(self._max_streams, self._on_release)
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

    def __init__(self, connection: _Connection, stream: _Stream, timeout: float) -> None:
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
            if item is _END:
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


class _Stream:
    __slots__ = ("id", "status_code", "headers", "trailers", "data", "response_started", "window", "error", "sender")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.status_code: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.data: asyncio.Queue[object] = asyncio.Queue()
        self.response_started = asyncio.Event()
        self.window = asyncio.Event()  # set when the send window may have opened
        self.error: UpstreamError | None = None
        self.sender: asyncio.Task[None] | None = None


class _Connection:
    def __init__(self, max_streams: int, on_release: Callable[[], None]) -> None:
        self._max_streams = max_streams
        self._on_release = on_release
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=False)
        )
        self._streams: dict[int, _Stream] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._authority = b""
        self._connected = False
        self._flush_scheduled = False
        self._settled = asyncio.Event()  # the upstream's first SETTINGS arrived (or the connection ended)
        self.usable = True

    async def connect(self, host: str, port: int) -> None:
        try:
            reader, self._writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self.usable = False
            raise UpstreamUnreachable("upstream unreachable") from exc
        self._authority = (f"[{host}]" if ":" in host else host).encode() + b":%d" % port
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            },
        )
        self._h2.initiate_connection()
        # HTTP/2's 64 KiB default windows would cap a large message at a window per round trip. What one connection
        # may have unread stays bounded all the same: by these windows, as the caller reads.
        self._h2.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        # Streams open only once the upstream's SETTINGS are in: its SETTINGS_MAX_CONCURRENT_STREAMS binds from the
        # start, where streams opened before it could be refused (the caller's timeout bounds the wait).
        await self._settled.wait()
        if not self.usable:
            raise UpstreamUnreachable("upstream closed the connection before its HTTP/2 settings")
        self._connected = True

    def has_room(self) -> bool:
        peer_limit = self._h2.remote_settings.max_concurrent_streams
        return self._connected and self.usable and len(self._streams) < min(self._max_streams, peer_limit)

    def open_stream(self, method: str, path: str, headers: list[tuple[bytes, bytes]], has_body: bool) -> _Stream:
        authority = self._authority
        fields: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name == _HOST:
                authority = value
            elif name != _TE and name not in _CONNECTION_SPECIFIC:
                fields.append((name, value))
        # The gateway reads trailers, and gRPC servers refuse a call without this (PROTOCOL-HTTP2.md, "TE").
        fields.append(_TE_TRAILERS)
        pseudo = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", path.encode()),
        ]
        stream = _Stream(self._h2.get_next_available_stream_id())
        self._streams[stream.id] = stream
        try:
            self._h2.send_headers(stream.id, pseudo + fields, end_stream=not has_body)
        except h2.exceptions.ProtocolError as exc:
            self._forget(stream)
            raise UpstreamError(f"request not sendable upstream: {exc}") from exc
        self._flush()
        return stream

    async def send_body(self, stream: _Stream, body: AsyncIterator[bytes]) -> None:
        # Its own task: the body may go on after the response has started (bidirectional streaming).
        try:
            async for chunk in body:
                view = memoryview(chunk)
                while view:
                    size = await self._send_window(stream, len(view))
                    self._h2.send_data(stream.id, view[:size].tobytes())
                    view = view[size:]
                    if view or len(chunk) >= _READ_CHUNK:
                        # A large body goes out at once, and waits while the socket's buffer is full.
                        self._write_out()
                        await self._drain()
                    else:
                        self._flush()
            if stream.id in self._streams:
                self._h2.end_stream(stream.id)
                self._flush()
        except (h2.exceptions.StreamClosedError, UpstreamError, ConnectionError):
            return  # the stream or the connection ended first; the response side reports why
        except Exception as exc:
            # The client's own body failed (it went away mid-upload): the upstream stream is cancelled.
            self._fail(stream, UpstreamError(f"request body failed: {type(exc).__name__}"))
            self.cancel(stream)

    def acknowledge(self, stream: _Stream, size: int) -> None:
        # Also once the stream has ended: the connection's window needs the bytes back.
        if self.usable:
            self._h2.acknowledge_received_data(size, stream.id)
            self._flush()

    def cancel(self, stream: _Stream) -> None:
        """Resets the stream with CANCEL unless it has ended; stops sending its body."""
        if stream.sender is not None and stream.sender is not asyncio.current_task():
            stream.sender.cancel()
        unread = 0
        while not stream.data.empty():
            item = stream.data.get_nowait()
            unread += len(item) if isinstance(item, bytes) else 0
        if unread:
            self.acknowledge(stream, unread)
        if stream.id not in self._streams:
            return
        self._forget(stream)
        if self.usable:
            try:
                self._h2.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.StreamClosedError:
                return
            self._flush()

    async def close(self) -> None:
        self.usable = False
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            try:
                self._h2.close_connection()
                self._write_out()
            except h2.exceptions.ProtocolError:
                pass
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def _send_window(self, stream: _Stream, wanted: int) -> int:
        while True:
            if stream.id not in self._streams or not self.usable:
                raise UpstreamError("stream ended")
            available = min(self._h2.local_flow_control_window(stream.id), self._h2.max_outbound_frame_size)
            if available > 0:
                return min(available, wanted)
            stream.window.clear()
            await stream.window.wait()

    async def _drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    def _flush(self) -> None:
        """Sends what h2 has queued once this turn of the event loop is over: every stream's frames of one turn
        go out in one write (one system call, where a write per frame cost most of a call's time)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_out)

    def _write_out(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        error: UpstreamError = UpstreamError("upstream closed the connection")
        try:
            while True:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    break
                for event in self._h2.receive_data(data):
                    self._handle(event)
                self._flush()
        except h2.exceptions.ProtocolError as exc:
            error = UpstreamError(f"upstream broke HTTP/2: {type(exc).__name__}")
        except OSError as exc:
            error = UpstreamError(f"upstream connection failed: {type(exc).__name__}")
        self.usable = False
        self._settled.set()
        for stream in list(self._streams.values()):
            self._fail(stream, error)
        if self._writer is not None:
            self._writer.close()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._settled.set()
            # A connection-level update (stream id 0) or new initial window may open any stream.
            for waiting in self._streams.values():
                waiting.window.set()
            return
        if isinstance(event, h2.events.ConnectionTerminated):
            self._terminated(event)
            return
        stream_id = getattr(event, "stream_id", None)
        stream = self._streams.get(stream_id) if stream_id is not None else None
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            headers = list(event.headers or [])
            status = next((value for name, value in headers if name == b":status"), b"0")
            stream.status_code = int(status) if status.isdigit() else 0
            stream.headers = [(name, value) for name, value in headers if not name.startswith(b":")]
            stream.response_started.set()
        elif isinstance(event, h2.events.InformationalResponseReceived):
            return
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length and not event.data:
                self._h2.acknowledge_received_data(event.flow_controlled_length, stream.id)
            elif event.data:
                # Padding counts against the window but is never read: give it back now.
                padding = (event.flow_controlled_length or 0) - len(event.data)
                if padding > 0:
                    self._h2.acknowledge_received_data(padding, stream.id)
                stream.data.put_nowait(event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers = list(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            stream.data.put_nowait(_END)
            if stream.sender is not None and not stream.sender.done():
                # The response is whole while the request body is still going: stop it (RFC 9113 8.1).
                stream.sender.cancel()
                self._h2.reset_stream(stream.id, h2.errors.ErrorCodes.NO_ERROR)
            self._forget(stream)
        elif isinstance(event, h2.events.StreamReset):
            self._fail(stream, UpstreamReset(event.error_code or 0))

    def _terminated(self, event: h2.events.ConnectionTerminated) -> None:
        # GOAWAY: no new streams here; streams above last_stream_id were never processed (RFC 9113 6.8).
        self.usable = False
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream in list(self._streams.values()):
            if stream.id > last:
                self._fail(stream, UpstreamUnreachable("upstream refused the stream (GOAWAY)"))

    def _fail(self, stream: _Stream, error: UpstreamError) -> None:
        if stream.error is None:
            stream.error = error
            stream.data.put_nowait(error)
        stream.response_started.set()
        stream.window.set()
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        if self._streams.pop(stream.id, None) is not None:
            self._on_release()


def _code_name(error_code: int) -> str:
    try:
        return h2.errors.ErrorCodes(error_code).name
    except ValueError:
        return str(error_code)
