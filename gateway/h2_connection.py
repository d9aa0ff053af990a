"""One HTTP/2 client connection to an upstream (h2c, prior knowledge) on the `h2` state machine.

gateway/h2_upstream.py pools these. A connection reads in a task of its own and hands each stream its events; frames
go out once per event-loop turn; received data is acknowledged as the caller reads it (flow control). What a
stream hands its caller is gateway/h2_upstream_stream.py's `Stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from gateway.h2_upstream_stream import END, Stream, UpstreamReset
from gateway.proxy import UpstreamError, UpstreamUnreachable

_READ_CHUNK = 64 * 1024
_STREAM_WINDOW = 1024 * 1024
_CONNECTION_WINDOW = 8 * 1024 * 1024
# Connection-specific header fields an HTTP/2 request must not carry (RFC 9113 8.2.2).
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_HOST = b"host"
_TE = b"te"
_TE_TRAILERS = (_TE, b"trailers")


class Connection:
    def __init__(self, max_streams: int, on_release: Callable[[], None]) -> None:
        self._max_streams = max_streams
        self._on_release = on_release
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=False)
        )
        self._streams: dict[int, Stream] = {}
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

    def open_stream(self, method: str, path: str, headers: list[tuple[bytes, bytes]], has_body: bool) -> Stream:
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
        stream = Stream(self._h2.get_next_available_stream_id())
        self._streams[stream.id] = stream
        try:
            self._h2.send_headers(stream.id, pseudo + fields, end_stream=not has_body)
        except h2.exceptions.ProtocolError as exc:
            self._forget(stream)
            raise UpstreamError(f"request not sendable upstream: {exc}") from exc
        self._flush()
        return stream

    async def send_body(self, stream: Stream, body: AsyncIterator[bytes]) -> None:
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

    def acknowledge(self, stream: Stream, size: int) -> None:
        # Also once the stream has ended: the connection's window needs the bytes back.
        if self.usable:
            self._h2.acknowledge_received_data(size, stream.id)
            self._flush()

    def cancel(self, stream: Stream) -> None:
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

    async def _send_window(self, stream: Stream, wanted: int) -> int:
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
            stream.data.put_nowait(END)
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

    def _fail(self, stream: Stream, error: UpstreamError) -> None:
        if stream.error is None:
            stream.error = error
            stream.data.put_nowait(error)
        stream.response_started.set()
        stream.window.set()
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if self._streams.pop(stream.id, None) is not None:
            self._on_release()
