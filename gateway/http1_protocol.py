"""uvicorn's httptools protocol with the client guard: a bounded request head, deadlines for slow clients, proxied
targets only.

gateway/edge.py hands each HTTP/1.1 connection to `GuardedHttpToolsProtocol`. It keeps a request head within
GATEWAY_CLIENT_MAX_HEADER_BYTES, refuses a target that is not a proxied path, and answers the deadlines of
gateway/client_guard.py's sweep (`enforce`). A request pays for none of it but a counter and a comparison per read:
the sweep notes when a connection last made progress. What it reads of uvicorn's protocol is guarded by
tests/unit/test_uvicorn_surface.py.
"""

from __future__ import annotations

import asyncio
import http

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.client_guard import (
    LINGER_SECONDS,
    ClientLimits,
    count_refusal,
    current_limits,
    track_upgraded,
    watch_connections,
)
from gateway.forwarding import request_target_problem


class _Refused(Exception):
    """Raised from a parser callback: httptools stops parsing and uvicorn calls send_400_response."""


def _head_size(target: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    # "name: value\r\n" per field, as on the wire, less the request line's method and version.
    return len(target) + sum(len(name) + len(value) + 4 for name, value in headers)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head, deadlines for slow clients, proxied targets only."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The guard's state starts here, so that uvicorn's constructor is used as it is.
        opened = self.loop.time()
        # When the head being read started: the connection's opening, or the first sweep to see part of a keep-alive
        # request's head (a clock read per request would cost more than a deadline a fraction of a second late).
        self._head_started: float | None = opened
        self._head_bytes = 0
        # Reads so far; the sweep notes when the count last changed.
        self._reads = 0
        self._reads_seen = 0
        self._progress_at = opened
        self._write_paused_at: float | None = None
        self._refusal: tuple[str, http.HTTPStatus, str] | None = None
        self._lingering_since: float | None = None
        self._max_header_bytes = current_limits().max_header_bytes
        super().connection_made(transport)
        watch_connections(self.connections, self.loop)

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
        track_upgraded(self.transport)

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
                count_refusal("header_timeout")
                transport.close()

    def _refuse(self, kind: str, status: http.HTTPStatus, message: str = "") -> None:
        """Answers `status` and closes the connection, lingering; counted under `kind`."""
        cycle = self.cycle
        if cycle is not None and cycle.more_body and cycle.response_complete:
            # The client is still sending the body of a request it has had its answer to: a second answer would
            # read as the response to a request it never sent. Closing is what RFC 9112 9.6 allows here.
            self.transport.close()
            return
        count_refusal(kind)
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
        count_refusal(kind)
        self.transport.abort()
        self._disconnect_cycle()

    def _disconnect_cycle(self) -> None:
        # As uvicorn's connection_lost will, but now: the request's task sees the disconnect at once and stops
        # waiting for the upstream, and sends nothing more on the closed connection.
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
