"""HTTP/2 from clients: an asyncio protocol on the `h2` state machine, one ASGI task per stream.

uvicorn has no HTTP/2. This protocol takes a connection from gateway/edge.py (h2c with prior knowledge, or TLS with
ALPN "h2") and runs each stream as one ASGI `http` request of the same app, tracked in uvicorn's server state so that
its graceful shutdown waits for it: every stream gets its own sampling decision, trace, spans, access line and metrics.
The deadlines are gateway/client_guard.py's, enforced by the same sweep.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
from prometheus_client import Counter
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.client_guard import LINGER_SECONDS, ClientLimits, count_refusal, current_limits, watch_connections
from gateway.h2_request import Budget, Headers, Refusal, http_scope, parse_request
from gateway.h2_stream import Stream
from gateway.metrics import Metrics
from gateway.settings import Settings

# The per-stream receive window, which is also the most request body a stream buffers.
STREAM_WINDOW = 65_535
# The connection's receive window (RFC 9113 6.9.2): enough for every stream's window, up to this.
MAX_CONNECTION_WINDOW = 16 * 1024 * 1024
# Resets by the client of streams it opened (CVE-2023-44487 "rapid reset"), PINGs and SETTINGS: at once, per second.
RESET_BUDGET = (200.0, 100.0)
CONTROL_FRAME_BUDGET = (100.0, 20.0)

logger = logging.getLogger("gateway.clients")


@dataclass(frozen=True, slots=True)
class Http2Limits:
    max_concurrent_streams: int = 100
    keepalive_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Http2Limits:
        return cls(settings.http2_max_concurrent_streams, settings.client_keepalive_timeout)


class _Http2:
    def __init__(self) -> None:
        self.limits = Http2Limits()
        self.streams: Counter | None = None
        self.resets: dict[str, Any] = {}


_http2 = _Http2()


def configure_http2(limits: Http2Limits, metrics: Metrics | None) -> None:
    _http2.limits = limits
    if metrics is not None:
        _http2.streams = metrics.http2_streams
        _http2.resets = {by: metrics.http2_resets.labels(by) for by in ("client", "gateway")}


def _count_reset(by: str) -> None:
    counter = _http2.resets.get(by)
    if counter is not None:
        counter.inc()


class Http2Protocol(asyncio.Protocol):
    """One client's HTTP/2 connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self._app = config.loaded_app
        self._root_path = config.root_path
        self._app_state = app_state
        self._server_state = server_state
        # uvicorn types the set as its own protocols; this one takes part in the same graceful shutdown.
        self.connections: set[Any] = server_state.connections
        self._tasks = server_state.tasks
        self.loop = _loop or asyncio.get_event_loop()
        self._limits = _http2.limits
        self._max_header_bytes = ClientLimits().max_header_bytes
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True)
        )
        self.transport: asyncio.Transport | None = None
        self._scheme = "http"
        self._server: tuple[str, int] | None = None
        self._client: tuple[str, int] | None = None
        self._streams: dict[int, Stream] = {}
        self._writable = asyncio.Event()
        self._writable.set()
        self._write_paused_at: float | None = None
        now = self.loop.time()
        self._opened_at = now
        self._idle_since: float | None = now
        self._any_request = False
        self._closing = False
        self._lingering_since: float | None = None
        self._resets = Budget(*RESET_BUDGET, now)
        self._control_frames = Budget(*CONTROL_FRAME_BUDGET, now)

    # --- asyncio ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._max_header_bytes = current_limits().max_header_bytes
        self.transport = transport
        self.connections.add(self)
        self._scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self._server = _address(transport.get_extra_info("sockname"))
        self._client = _address(transport.get_extra_info("peername"))
        max_streams = self._limits.max_concurrent_streams
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self._max_header_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        extra = min(MAX_CONNECTION_WINDOW, max_streams * STREAM_WINDOW) - 65_535
        if extra > 0:
            self._h2.increment_flow_control_window(extra)
        self._flush()
        watch_connections(self.connections, self.loop)

    def data_received(self, data: bytes) -> None:
        if self._lingering_since is not None:
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.DenialOfServiceError:
            self._fail("header_too_large", h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", None) or h2.errors.ErrorCodes.PROTOCOL_ERROR
            self._fail("protocol_error", code)
            return
        for event in events:
            self._handle(event)
            if self._lingering_since is not None or self.transport is None:
                return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        for stream in self._streams.values():
            stream.close()
        self._writable.set()
        self.transport = None

    def pause_writing(self) -> None:
        self._writable.clear()
        self._write_paused_at = self.loop.time()

    def resume_writing(self) -> None:
        self._writable.set()
        self._write_paused_at = None

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: GOAWAY now, the streams in flight finish, then the connection closes."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        if not self._streams:
            self._h2.close_connection(last_stream_id=self._h2.highest_inbound_stream_id)
            self._flush()
            self.transport.close()
            return
        # h2 takes no frame of a stream after its own GOAWAY: this one is written beside it, and streams the client
        # opens from now on are refused (REFUSED_STREAM, safe to retry elsewhere).
        self._flush()
        goaway = hyperframe.frame.GoAwayFrame(last_stream_id=self._h2.highest_inbound_stream_id)
        self.transport.write(goaway.serialize())

    # --- h2 events ---

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers or [], ended=event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:
                # A stream already answered (or refused): its bytes are consumed at once, so they hold no window.
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                stream.data(event.data or b"", event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.ended()
        elif isinstance(event, h2.events.StreamReset):
            if event.remote_reset:
                _count_reset("client")
                if not self._resets.spend(self.loop.time()):
                    self._fail("flood", h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                    return
            self._forget(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self._streams.values() if event.stream_id == 0 else [self._streams.get(event.stream_id)]
            for stream in targets:
                if stream is not None:
                    stream.window_opened()
        elif isinstance(event, (h2.events.PingReceived, h2.events.RemoteSettingsChanged)):
            if not self._control_frames.spend(self.loop.time()):
                self._fail("flood", h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                for stream in self._streams.values():
                    stream.window_opened()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client is going away: streams it already sent finish; no new ones will come.
            self._closing = True
            if not self._streams and self.transport is not None:
                self.transport.close()
        elif isinstance(event, h2.events.SettingsAcknowledged):
            # h2 now refuses a header block over the limit with a connection error (an HPACK bomb). Up to twice the
            # limit, the block is decoded and the one request answered 431 instead (parse_request), as HTTP/1.1 is.
            self._h2.decoder.max_header_list_size = 2 * self._max_header_bytes
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None and event.stream_ended is not None:
                stream.ended()

    def _request(self, stream_id: int, fields: list[tuple[bytes, bytes]], *, ended: bool) -> None:
        self._any_request = True
        if _http2.streams is not None:
            _http2.streams.inc()
        if self._closing:
            self._reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        request = parse_request(fields, self._max_header_bytes)
        if isinstance(request, Refusal):
            count_refusal(request.kind)
            self._refuse(stream_id, request)
            return
        self._idle_since = None
        stream = Stream(stream_id, self, request.method, self.loop.time)
        if ended:
            stream.ended()
        self._streams[stream_id] = stream
        scope = http_scope(
            request,
            scheme=self._scheme,
            server=self._server,
            client=self._client,
            root_path=self._root_path,
            state=self._app_state.copy(),
        )
        task = self.loop.create_task(self._run(scope, stream))
        task.add_done_callback(self._tasks.discard)
        self._tasks.add(task)

    async def _run(self, scope: dict[str, Any], stream: Stream) -> None:
        try:
            await self._app(scope, stream.receive, stream.send)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            logger.exception("exception in the app on HTTP/2 stream %d", stream.stream_id)
            if not stream.response_started and not stream.disconnected:
                await stream.send({"type": "http.response.start", "status": 500, "headers": []})
                await stream.send({"type": "http.response.body", "body": b"internal server error\n"})
        finally:
            if not stream.response_complete and not stream.disconnected:
                self._reset(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self._forget(stream.stream_id)
            self._flush()

    def _refuse(self, stream_id: int, refusal: Refusal) -> None:
        body = f"{refusal.message}\n".encode()
        headers = [
            (b":status", str(refusal.status.value).encode()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        try:
            self._h2.send_headers(stream_id, headers)
            self._h2.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.H2Error:
            self._reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.close()
            if stream.buffered and self._open(stream_id):
                # Unread body bytes go back to the connection's window.
                self._h2.acknowledge_received_data(stream.buffered, stream_id)
        if not self._streams:
            self._idle_since = self.loop.time()
            if self._closing and self.transport is not None:
                self._flush()
                self.transport.close()

    def _open(self, stream_id: int) -> bool:
        try:
            return self._h2.local_flow_control_window(stream_id) >= 0
        except h2.exceptions.H2Error:
            return False

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            return
        _count_reset("gateway")
        self._flush()

    def _fail(self, kind: str, code: h2.errors.ErrorCodes) -> None:
        """A connection error: GOAWAY with `code`, counted under `kind`, and the connection closed."""
        count_refusal(kind)
        self._closing = True
        for stream in self._streams.values():
            stream.close()
        if self.transport is None:
            return
        try:
            self._h2.close_connection(code, last_stream_id=self._h2.highest_inbound_stream_id)
        except h2.exceptions.H2Error:
            pass
        self._flush()
        self._linger()

    def _linger(self) -> None:
        # Half-close, then read and drop what the client still sends for a while: closing with unread input would
        # reset the connection, and the client might never read the GOAWAY that says why.
        transport = self.transport
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering_since = self.loop.time()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # --- for the streams (gateway/h2_stream.py's StreamConnection) ---

    def acknowledge(self, stream_id: int, size: int) -> None:
        try:
            self._h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.H2Error:
            return
        self._flush()

    def send_headers(self, stream_id: int, headers: Headers, *, end_stream: bool) -> None:
        try:
            self._h2.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.H2Error:
            self._forget(stream_id)
            return
        self._flush()

    def send_window(self, stream_id: int) -> int:
        try:
            window = self._h2.local_flow_control_window(stream_id)
        except h2.exceptions.H2Error:
            return 0
        return min(window, self._h2.max_outbound_frame_size)

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        try:
            self._h2.send_data(stream_id, data, end_stream=end_stream)
        except h2.exceptions.H2Error:
            self._forget(stream_id)
            return
        self._flush()

    async def writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    # --- the client guard's sweep ---

    def enforce(self, now: float, limits: ClientLimits) -> None:
        """Closes or resets what overran a deadline; called by gateway/client_guard.py's sweep."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._lingering_since is not None:
            if now - self._lingering_since > LINGER_SECONDS:
                self.transport.close()
            return
        if self._write_paused_at is not None and now - self._write_paused_at > limits.send_timeout:
            # The client stopped reading the connection altogether.
            count_refusal("send_timeout")
            self.transport.abort()
            return
        if not self._any_request and now - self._opened_at > limits.header_timeout:
            self._fail("header_timeout", h2.errors.ErrorCodes.NO_ERROR)
            return
        idle = self._idle_since
        if idle is not None and not self._closing and now - idle > self._limits.keepalive_timeout:
            self._closing = True
            self._h2.close_connection(last_stream_id=self._h2.highest_inbound_stream_id)
            self._flush()
            self.transport.close()
            return
        for stream in list(self._streams.values()):
            blocked = stream.blocked_since
            if blocked is not None and now - blocked > limits.send_timeout:
                count_refusal("send_timeout")
                self._reset(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
                self._forget(stream.stream_id)
            elif stream.waiting_for_body and now - stream.body_progress_at > limits.body_timeout:
                count_refusal("body_timeout")
                self._reset(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
                self._forget(stream.stream_id)


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
