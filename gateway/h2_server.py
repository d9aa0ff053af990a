"""HTTP/2 from clients: an asyncio protocol on the `h2` state machine, one ASGI task per stream.

uvicorn has no HTTP/2. This protocol takes a connection from gateway/edge.py (h2c with prior knowledge, or TLS with
ALPN "h2") and runs each stream as one ASGI `http` request of the same app, tracked in uvicorn's server state so that
its graceful shutdown waits for it: every stream gets its own sampling decision, trace, spans, access line and metrics.
The deadlines are gateway/client_guard.py's, enforced by the same sweep; the limits are gateway/h2_limits.py's, and
what the gateway writes goes through gateway/h2_sender.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.client_guard import LINGER_SECONDS, ClientLimits, count_refusal, current_limits, watch_connections
from gateway.h2_frames import GoAwayFilter
from gateway.h2_limits import CONTROL_FRAME_BUDGET, RESET_BUDGET, count_reset, count_stream, current_http2_limits
from gateway.h2_request import Budget, Refusal, http_scope, parse_request
from gateway.h2_sender import FrameSender
from gateway.h2_stream import Stream


class Http2Protocol(asyncio.Protocol):
    """One client's HTTP/2 connection."""

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        # Built by gateway/edge.py, with what uvicorn built it with.
        if not config.loaded:
            config.load()
        self._app = config.loaded_app
        self._root_path = config.root_path
        self._app_state = app_state
        # uvicorn types the set as its own protocols; this one takes part in the same graceful shutdown.
        self.connections: set[Any] = server_state.connections
        self._tasks = server_state.tasks
        self.loop = loop
        self._limits = current_http2_limits()
        self._max_header_bytes = ClientLimits().max_header_bytes
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True)
        )
        self.transport: asyncio.Transport | None = None
        self._scheme = "http"
        self._server: tuple[str, int] | None = None
        self._client: tuple[str, int] | None = None
        self._streams: dict[int, Stream] = {}
        self._sender = FrameSender(self._h2, self._forget)
        now = self.loop.time()
        self._opened_at = now
        self._idle_since: float | None = now
        self._any_request = False
        self._closing = False
        self._lingering_since: float | None = None
        self._goaways = GoAwayFilter()
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
        self._sender.start(transport, self._limits.max_concurrent_streams, self._max_header_bytes)
        watch_connections(self.connections, self.loop)

    def data_received(self, data: bytes) -> None:
        if self._lingering_since is not None:
            return
        data, goaways = self._goaways.feed(data)
        try:
            events = self._h2.receive_data(data) if data else []
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
        if goaways:
            self._client_going_away()
        self._sender.flush()

    def _client_going_away(self) -> None:
        # The client opens no more streams; those it opened finish, then the connection closes.
        self._closing = True
        if not self._streams:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        for stream in self._streams.values():
            stream.close()
        self._sender.lost()
        self.transport = None

    def pause_writing(self) -> None:
        self._sender.pause(self.loop.time())

    def resume_writing(self) -> None:
        self._sender.resume()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: GOAWAY now, the streams in flight finish, then the connection closes."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        if self._streams:
            self._sender.go_away_beside_streams()
        else:
            self._sender.go_away()
            self._close()

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
                count_reset("client")
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
            # Not from the client (its GOAWAY frames never reach h2: gateway/h2_frames.py), but h2 may end it too.
            self._client_going_away()
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
        count_stream()
        if self._closing:
            self._sender.reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        request = parse_request(fields, self._max_header_bytes)
        if isinstance(request, Refusal):
            count_refusal(request.kind)
            self._sender.refuse(stream_id, request)
            return
        self._idle_since = None
        stream = Stream(stream_id, self._sender, request.method, self.loop.time)
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
            await stream.serve(self._app, scope)
        finally:
            if not stream.response_complete and not stream.disconnected:
                self._sender.reset(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self._forget(stream.stream_id)
            self._sender.flush()

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.close()
            if stream.buffered:
                # Body bytes never read go back to the connection's window (h2 credits the connection even when the
                # stream is closed), or resets with unread bodies would shrink it until no body could be sent.
                self._sender.acknowledge(stream_id, stream.buffered)
        if not self._streams:
            self._idle_since = self.loop.time()
            if self._closing:
                self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self._sender.flush()
            self.transport.close()

    def _fail(self, kind: str, code: h2.errors.ErrorCodes) -> None:
        """A connection error: GOAWAY with `code`, counted under `kind`, and the connection closed."""
        count_refusal(kind)
        self._closing = True
        for stream in self._streams.values():
            stream.close()
        if self.transport is not None:
            self._sender.go_away(code)
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

    # --- the client guard's sweep ---

    def enforce(self, now: float, limits: ClientLimits) -> None:
        """Closes or resets what overran a deadline; called by gateway/client_guard.py's sweep."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._lingering_since is not None:
            if now - self._lingering_since > LINGER_SECONDS:
                self.transport.close()
            return
        paused_at = self._sender.paused_at
        if paused_at is not None and now - paused_at > limits.send_timeout:
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
            self._sender.go_away()
            self._close()
            return
        for stream in list(self._streams.values()):
            blocked = stream.blocked_since
            if blocked is not None and now - blocked > limits.send_timeout:
                count_refusal("send_timeout")
                self._sender.reset(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
                self._forget(stream.stream_id)
            elif stream.waiting_for_body and now - stream.body_progress_at > limits.body_timeout:
                count_refusal("body_timeout")
                self._sender.reset(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
                self._forget(stream.stream_id)


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
