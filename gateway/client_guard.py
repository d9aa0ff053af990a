"""What a client may cost the gateway: a bounded request head, deadlines for slow clients, proxied targets only.

uvicorn's httptools protocol reads a request head of any size for as long as the client likes, never notices a client
that stalls mid-body or stops reading the response, and keeps a connection that sends nothing open forever: one
slowloris client per upstream connection would hold the whole pool. An edge proxy needs what nginx calls
client_header_timeout, client_body_timeout, send_timeout and large_client_header_buffers: here are the limits, and
one sweep per worker over its connections, a few times a second, that has each connection enforce them
(gateway/http1_protocol.py's `GuardedHttpToolsProtocol`, gateway/h2_server.py's `Http2Protocol`): a request pays for
none of it but a counter and a comparison per read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

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
    """Counts a client refused or cut off under `kind` (one of metrics.CLIENT_ERROR_KINDS)."""
    _guard.count(kind)


def track_upgraded(transport: asyncio.Transport) -> None:
    """Notes an upgraded (WebSocket) connection by its client's address, for `cut_off`."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        _guard.upgraded[(str(peer[0]), int(peer[1]))] = transport
