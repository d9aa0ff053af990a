"""The connection dispatcher: each client connection is handed, once, to the HTTP/1.1 or the HTTP/2 protocol.

uvicorn is given `EdgeProtocol` as its `http=` class and builds one per connection. Under TLS the ALPN result picks
the protocol; in cleartext the first bytes do (the HTTP/2 connection preface means h2c with prior knowledge). After
that the chosen protocol is the transport's: a request pays nothing for the dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Protocol

from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.client_guard import ClientLimits, count_refusal, watch_connections
from gateway.h2_limits import Http2Limits, configure_http2
from gateway.h2_server import Http2Protocol
from gateway.http1_protocol import GuardedHttpToolsProtocol
from gateway.metrics import Metrics
from gateway.settings import Settings

PROTOCOL = "gateway.edge:EdgeProtocol"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ALPN_HTTP2 = "h2"

logger = logging.getLogger("gateway.clients")


class TlsHandshakes(Protocol):
    """What the dispatcher needs from TLS termination (implemented by gateway/tls.py's TlsTerminator)."""

    @property
    def context(self) -> ssl.SSLContext: ...  # server-side, ALPN ["h2", "http/1.1"], sni_callback for SNI/reload

    @property
    def handshake_timeout(self) -> float: ...  # seconds

    def succeeded(self, ssl_object: ssl.SSLObject | None) -> None: ...  # count by negotiated protocol

    def failed(self, error: BaseException) -> None: ...  # count by outcome


class _Edge:
    """This process's TLS termination (if any), and where connections are counted by protocol."""

    def __init__(self) -> None:
        self.handshakes: TlsHandshakes | None = None
        self.opened: dict[str, Any] = {}

    def count_opened(self, protocol: str) -> None:
        counter = self.opened.get(protocol)
        if counter is not None:
            counter.inc()


_edge = _Edge()


def use_tls(handshakes: TlsHandshakes | None) -> None:
    """Sets this process's TLS termination (None = cleartext). Each worker calls it when it builds its app."""
    _edge.handshakes = handshakes


def configure(settings: Settings, metrics: Metrics | None = None) -> None:
    """Sets this process's HTTP/2 limits and where connections are counted (each worker, when it builds its app)."""
    configure_http2(Http2Limits.from_settings(settings), metrics)
    if metrics is not None:
        _edge.opened = {protocol: metrics.client_protocol_connections.labels(protocol) for protocol in ("http1", "h2")}


class EdgeProtocol(asyncio.Protocol):
    """The class uvicorn is given as `http=`; it becomes the HTTP/1.1 or HTTP/2 protocol of its connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_event_loop()
        self._transport: asyncio.Transport | None = None
        self._received = b""
        self._raw = True  # under TLS: until start_tls has its protocol on the transport
        self._early = b""
        self._handed_over = False
        self._opened_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        # Until handed over, the connection is uvicorn's like any other (its graceful shutdown closes it), and the
        # client guard's sweep closes it if it says nothing within the header timeout.
        self._opened_at = self._loop.time()
        self._server_state.connections.add(self)  # type: ignore[arg-type]
        watch_connections(self._server_state.connections, self._loop)
        handshakes = _edge.handshakes
        if handshakes is None:
            return
        self._loop.create_task(self._start_tls(transport, handshakes), name="tls handshake")

    def data_received(self, data: bytes) -> None:
        if self._raw and _edge.handshakes is not None:
            # The ClientHello, read before start_tls took over the transport: kept for the TLS protocol.
            self._early += data
            self._transport.pause_reading()  # type: ignore[union-attr]
            return
        # In cleartext, the first bytes; under TLS, bytes that arrived between the handshake and the hand-over.
        self._received += data
        if _edge.handshakes is not None or self._transport is None:
            return
        received = self._received
        if received[: len(PREFACE)] == PREFACE[: len(received)] and len(received) < len(PREFACE):
            return  # maybe the preface, maybe not yet: wait for more
        self._hand_over(self._transport, http2=received.startswith(PREFACE))

    def eof_received(self) -> bool | None:
        if self._transport is not None and not self._handed_over:
            self._transport.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: a connection that has not yet said what it speaks has nothing in flight."""
        if self._transport is not None and not self._handed_over:
            self._transport.close()

    def enforce(self, now: float, limits: ClientLimits) -> None:
        """Closes a connection that sent nothing (or no whole TLS handshake) within the header timeout."""
        if self._transport is not None and not self._handed_over and now - self._opened_at > limits.header_timeout:
            count_refusal("header_timeout")
            self._transport.close()

    async def _start_tls(self, transport: asyncio.Transport, handshakes: TlsHandshakes) -> None:
        start = self._loop.create_task(
            self._loop.start_tls(
                transport,
                self,
                handshakes.context,
                server_side=True,
                ssl_handshake_timeout=handshakes.handshake_timeout,
            )
        )
        # One turn of the loop: start_tls has now put its TLS protocol on the transport and queued that protocol's
        # connection_made and the transport's resume_reading. The ClientHello may have been read before that, by
        # this protocol (uvloop reads from the moment connection_made returns): it is fed to the TLS protocol right
        # after those two calls, before the loop reads the socket again.
        await asyncio.sleep(0)
        self._raw = False
        if self._early:
            self._loop.call_soon(self._feed_early, transport)
        try:
            tls_transport = await start
        except (OSError, TimeoutError) as exc:  # ssl.SSLError and the resets are OSErrors
            handshakes.failed(exc)
            transport.close()
            return
        ssl_object = tls_transport.get_extra_info("ssl_object") if tls_transport is not None else None
        if tls_transport is None or ssl_object is None:  # the client closed during the handshake
            handshakes.failed(ConnectionResetError("closed during the TLS handshake"))
            transport.close()
            return
        handshakes.succeeded(ssl_object)
        self._transport = tls_transport
        self._hand_over(tls_transport, http2=ssl_object.selected_alpn_protocol() == ALPN_HTTP2)

    def _feed_early(self, transport: asyncio.Transport) -> None:
        data, self._early = self._early, b""
        protocol = transport.get_protocol()
        # The TLS protocols of asyncio and uvloop are buffered protocols (get_buffer and buffer_updated).
        get_buffer, buffer_updated = getattr(protocol, "get_buffer", None), getattr(protocol, "buffer_updated", None)
        if get_buffer is None or buffer_updated is None:
            getattr(protocol, "data_received")(data)  # noqa: B009
            return
        while data:
            buffer = memoryview(get_buffer(len(data)))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            buffer_updated(size)
            data = data[size:]

    def _hand_over(self, transport: asyncio.Transport, *, http2: bool) -> None:
        self._server_state.connections.discard(self)
        self._handed_over = True
        protocol: asyncio.Protocol
        if http2:
            protocol = Http2Protocol(self._config, self._server_state, self._app_state, loop=self._loop)
            _edge.count_opened("h2")
        else:
            protocol = GuardedHttpToolsProtocol(self._config, self._server_state, self._app_state, self._loop)
            _edge.count_opened("http1")
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        received, self._received = self._received, b""
        if received and not transport.is_closing():
            protocol.data_received(received)
