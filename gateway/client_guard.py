"""What a client may cost the gateway: a bounded request head, deadlines for slow clients, proxied targets only.

uvicorn's httptools protocol reads a request head of any size for as long as the client likes, never notices a client
that stalls mid-body or stops reading the response, and keeps a connection that sends nothing open forever: one
slowloris client per upstream connection would hold the whole pool. An edge proxy needs what nginx calls
client_header_timeout, client_body_timeout, send_timeout and large_client_header_buffers, so
`GuardedHttpToolsProtocol` adds them to uvicorn's protocol. The deadlines are enforced by one sweep per worker over
its connections, a few times a second, which also notes when a connection last made progress: a request pays for
none of it but a counter and a comparison per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import resource
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.forwarding import request_target_problem
from gateway.metrics import CLIENT_ERROR_KINDS, Metrics
from gateway.settings import Settings

# After refusing a request, how long the gateway goes on reading (and discarding) what the client still sends, so
# that closing with unread input does not reset the connection before the client has read the refusal: nginx's
# lingering close.
LINGER_SECONDS = 2.0

logger = logging.getLogger("gateway.clients")


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout: float = 10.0  # from a connection's first byte (or its opening) to the end of a request's head
    body_timeout: float = 30.0  # between two reads of a request body
    send_timeout: float = 30.0  # that the client may leave the response unread
    max_header_bytes: int = 64 * 1024  # request line and header fields

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            settings.client_header_timeout,
            settings.client_body_timeout,
            settings.client_send_timeout,
            settings.client_max_header_bytes,
        )

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: a deadline is kept to within a quarter of itself, or a second."""
        shortest = min(self.header_timeout, self.body_timeout, self.send_timeout)
        return max(0.05, min(1.0, shortest / 4))


class _Guard:
    """This process's limits and metrics, and one sweep per uvicorn server over its connections."""

    def __init__(self) -> None:
        self.limits = ClientLimits()
        self._errors: dict[str, Counter] = {}
        self._connections: Gauge | None = None
        self._tasks: Gauge | None = None
        self._sweepers: dict[int, asyncio.Task[None]] = {}
        # Upgraded (WebSocket) connections by client address: uvicorn hands them to its WebSocket protocol, out of
        # this guard's sight, so the session's app asks for one to be cut off (`cut_off`).
        self.upgraded: dict[tuple[str, int], asyncio.Transport] = {}

    def configure(self, limits: ClientLimits, metrics: Metrics | None) -> None:
        self.limits = limits
        if metrics is not None:
            self._errors = {kind: metrics.client_errors.labels(kind) for kind in CLIENT_ERROR_KINDS}
            self._connections = metrics.client_connections
            self._tasks = metrics.event_loop_tasks

    def count(self, kind: str) -> None:
        counter = self._errors.get(kind)
        if counter is not None:
            counter.inc()

    def watch(self, connections: Set[Any], loop: asyncio.AbstractEventLoop) -> None:
        sweeper = self._sweepers.get(id(connections))
        if sweeper is None or sweeper.done():
            self._sweepers[id(connections)] = loop.create_task(self._sweep_forever(connections, loop), name="guard")

    async def _sweep_forever(self, connections: Set[Any], loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            try:
                self.sweep(connections, loop.time())
            except Exception:
                # A bug here must not end the sweep: every later slow client would then be let be.
                logger.exception("client guard sweep failed")

    def sweep(self, connections: Set[Any], now: float) -> None:
        limits = self.limits
        for protocol in list(connections):
            # GuardedHttpToolsProtocol, and gateway/h2_server.py's Http2Protocol.
            enforce = getattr(protocol, "enforce", None)
            if enforce is not None:
                enforce(now, limits)
        for client, transport in list(self.upgraded.items()):
            if transport.is_closing():
                del self.upgraded[client]
        if self._connections is not None:
            self._connections.set(len(connections))
        if self._tasks is not None:
            self._tasks.set(len(asyncio.all_tasks()))


_guard = _Guard()


def cut_off(client: tuple[str, int] | None) -> None:
    """Aborts the upgraded connection of ``client`` (a WebSocket's scope["client"]) and counts a send timeout.

    An abort rather than a close: what is still buffered for a client that stopped reading would hold a close open
    for as long as the client likes.
    """
    transport = _guard.upgraded.pop((client[0], client[1]), None) if client else None
    if transport is not None:
        _guard.count("send_timeout")
        transport.abort()


def configure(settings: Settings, metrics: Metrics | None = None) -> None:
    """Sets this process's limits (each worker calls it when it builds its app) and where to count refusals."""
    _guard.configure(ClientLimits.from_settings(settings), metrics)


def watch_connections(connections: Set[Any], loop: asyncio.AbstractEventLoop) -> None:
    """Starts this server's sweep (once): any connection with an `enforce(now, limits)` method is swept."""
    _guard.watch(connections, loop)


def current_limits() -> ClientLimits:
    return _guard.limits


def count_refusal(kind: str) -> None:
    """Counts a client refused or cut off under `kind` (one of metrics.CLIENT_ERROR_KINDS), for the other protocols."""
    _guard.count(kind)


class _Refused(Exception):
    """Raised from a parser callback: httptools stops parsing and uvicorn calls send_400_response."""


def _head_size(target: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    # "name: value\r\n" per field, as on the wire, less the request line's method and version.
    return len(target) + sum(len(name) + len(value) + 4 for name, value in headers)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head, deadlines for slow clients, proxied targets only."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # When the head being read started: the connection's opening, or the first sweep to see part of a keep-alive
        # request's head (a clock read per request would cost more than a deadline a fraction of a second late).
        self._head_started: float | None = None
        self._head_bytes = 0
        # Reads so far; the sweep notes when the count last changed.
        self._reads = 0
        self._reads_seen = 0
        self._progress_at = 0.0
        self._write_paused_at: float | None = None
        self._refusal: tuple[str, http.HTTPStatus, str] | None = None
        self._lingering_since: float | None = None
        self._max_header_bytes = _guard.limits.max_header_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = self._progress_at = self.loop.time()
        _guard.watch(self.connections, self.loop)

    def data_received(self, data: bytes) -> None:
        if self._lingering_since is not None:
            return
        self._reads += 1
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            # The base class by name rather than super(): this runs for every read.
            HttpToolsProtocol.data_received(self, data)
            return
        # The bytes of a request head (and maybe the body after it): counted whole, and the head's size checked only
        # if the parser has not reached the body, so that a small head with a large body in one read is no problem.
        # They may also be the rest of the body of a request already answered, which uvicorn reads and discards.
        self._head_bytes += len(data)
        HttpToolsProtocol.data_received(self, data)
        if self.cycle is not cycle:
            self._head_bytes = 0
            self._head_started = None
        elif (
            self._head_bytes > self._max_header_bytes
            and self._lingering_since is None
            and not self.transport.is_closing()
        ):
            self._refuse("header_too_large", http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        # A whole head can arrive in one read (up to 256 KiB): measured exactly, but only when the read was large.
        limit = self._max_header_bytes
        if self._head_bytes > limit and _head_size(self.url, self.headers) > limit:
            self._refusal = ("header_too_large", http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "")
            raise _Refused("request header fields too large")
        url = self.url
        # Most targets are a plain origin-form path: no need to look closer.
        if url[:1] != b"/" or b"." in url or b"%" in url or b"\\" in url:
            problem = request_target_problem(url)
            if problem is not None:
                self._refusal = ("bad_target", http.HTTPStatus.BAD_REQUEST, problem)
                raise _Refused(problem)
        HttpToolsProtocol.on_headers_complete(self)

    def send_400_response(self, msg: str) -> None:
        # Every request the parser refuses comes here: smuggling shapes (Content-Length with Transfer-Encoding, two
        # Content-Lengths), control characters, obs-fold, a bad request line; and the heads refused above.
        kind, status, message = self._refusal or ("invalid_request", http.HTTPStatus.BAD_REQUEST, msg)
        self._refuse(kind, status, message)

    def handle_websocket_upgrade(self) -> None:
        # uvicorn hands the transport to its WebSocket protocol and drops this one from the server's connections, so
        # the sweep no longer applies the HTTP deadlines to it (a session may be idle for long, by design); the
        # session's own deadlines (idle, send) are kept by gateway/websocket_proxy.py.
        super().handle_websocket_upgrade()
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            _guard.upgraded[(str(peer[0]), int(peer[1]))] = self.transport

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_paused_at = self.loop.time()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_paused_at = None

    def enforce(self, now: float, limits: ClientLimits) -> None:
        """Closes the connection if the client has overrun a deadline; called by the sweep."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._lingering_since is not None:
            if now - self._lingering_since > LINGER_SECONDS:
                transport.close()
            return
        if self._write_paused_at is not None and now - self._write_paused_at > limits.send_timeout:
            self._abort("send_timeout")
            return
        if self._reads != self._reads_seen:
            self._reads_seen = self._reads
            self._progress_at = now
        if self._head_bytes and self._head_started is None:
            self._head_started = now
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            if self.flow.read_paused:
                # The gateway stopped reading (the upstream is slow to take the body): not the client's wait.
                self._progress_at = now
            elif now - self._progress_at > limits.body_timeout:
                if cycle.response_started:
                    self._abort("body_timeout")
                else:
                    self._refuse("body_timeout", http.HTTPStatus.REQUEST_TIMEOUT)
            return
        if cycle is not None and not cycle.response_complete:
            return  # the request is read: the response is the gateway's to give (GATEWAY_UPSTREAM_TIMEOUT)
        started = self._head_started
        if started is not None and (cycle is None or self._head_bytes) and now - started > limits.header_timeout:
            if self._head_bytes:
                self._refuse("header_timeout", http.HTTPStatus.REQUEST_TIMEOUT)
            else:
                # Connected and said nothing: there is no request to answer. (An idle keep-alive connection is
                # uvicorn's, closed after GATEWAY_CLIENT_KEEPALIVE_TIMEOUT.)
                _guard.count("header_timeout")
                transport.close()

    def _refuse(self, kind: str, status: http.HTTPStatus, message: str = "") -> None:
        """Answers `status` and closes the connection, lingering; counted under `kind`."""
        cycle = self.cycle
        if cycle is not None and cycle.more_body and cycle.response_complete:
            # The client is still sending the body of a request it has had its answer to: a second answer would
            # read as the response to a request it never sent. Closing is what RFC 9112 9.6 allows here.
            self.transport.close()
            return
        _guard.count(kind)
        body = f"{message or status.phrase.lower()}\n".encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self._disconnect_cycle()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close: the refusal is sent, then what the client still sends is read and dropped until it closes
        # its side or LINGER_SECONDS pass (the sweep closes the connection then).
        self.transport.write_eof()
        self._lingering_since = self.loop.time()
        self.flow.resume_reading()

    def _abort(self, kind: str) -> None:
        # Whatever is still buffered for a client that stopped reading is thrown away with the connection.
        _guard.count(kind)
        self.transport.abort()
        self._disconnect_cycle()

    def _disconnect_cycle(self) -> None:
        # As uvicorn's connection_lost will, but now: the request's task sees the disconnect at once and stops
        # waiting for the upstream, and sends nothing more on the closed connection.
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()


def raise_open_file_limit() -> int:
    """Lifts the soft limit on open files to the hard one, and returns the limit in force.

    Every client connection is a file descriptor: a soft limit of 1024, a common default, would refuse connections
    long before memory or CPU run out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
    return soft
