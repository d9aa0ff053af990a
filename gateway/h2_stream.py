"""One HTTP/2 stream as one ASGI request: its body in, its response out, each bounded by HTTP/2 flow control.

The request body is acknowledged to the client (WINDOW_UPDATE) only as the app reads it, so a stream never buffers
more than its window. The response is written as the client's window for the stream allows: a client that stops
reading one stream holds back that stream's task, not the connection's other streams or the process's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.h2_request import Headers, response_headers, trailer_fields

logger = logging.getLogger("gateway.clients")


class StreamConnection(Protocol):
    """What a stream needs from its connection (gateway/h2_sender.py's FrameSender)."""

    def acknowledge(self, stream_id: int, size: int) -> None: ...

    def send_headers(self, stream_id: int, headers: Headers, *, end_stream: bool) -> None: ...

    def send_window(self, stream_id: int) -> int: ...  # what may be sent now: the windows, and the frame size

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None: ...

    async def writable(self) -> None: ...  # returns once the transport takes writes again


class Stream:
    """The ASGI `receive` and `send` of one stream."""

    def __init__(self, stream_id: int, connection: StreamConnection, method: str, now: Callable[[], float]) -> None:
        self.stream_id = stream_id
        self._connection = connection
        self._now = now
        self._head_only = method == "HEAD"
        self._body: deque[tuple[bytes, int]] = deque()
        self.buffered = 0
        self.request_ended = False
        self._body_read = False
        self.disconnected = False
        self._wake = asyncio.Event()
        self._window_opened = asyncio.Event()
        # While the client's window for this stream is closed: since when (the send timeout's clock).
        self.blocked_since: float | None = None
        # When the client last sent body bytes, or the app last took them (the body timeout's clock).
        self.body_progress_at = now()
        self.response_started = False
        self.response_complete = False
        self._start: tuple[int, Headers] | None = None
        self._trailers = False

    # --- from the connection ---

    def data(self, data: bytes, flow_controlled: int) -> None:
        self._body.append((data, flow_controlled))
        self.buffered += flow_controlled
        self.body_progress_at = self._now()
        self._wake.set()

    def ended(self) -> None:
        self.request_ended = True
        self._wake.set()

    def close(self) -> None:
        """The stream is gone (reset by either side, or the connection lost): the app's receive() says so."""
        self.disconnected = True
        self._wake.set()
        self._window_opened.set()

    def window_opened(self) -> None:
        self._window_opened.set()

    @property
    def waiting_for_body(self) -> bool:
        """True while the app waits for body bytes the client has not sent."""
        return not self.request_ended and not self._body and not self.disconnected

    # --- the app's ---

    async def serve(self, app: Callable[..., Awaitable[None]], scope: dict[str, Any]) -> None:
        """Runs the app on this stream; if it fails before its response starts, the client gets a 500."""
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            logger.exception("exception in the app on HTTP/2 stream %d", self.stream_id)
            if not self.response_started and not self.disconnected:
                await self.send({"type": "http.response.start", "status": 500, "headers": []})
                await self.send({"type": "http.response.body", "body": b"internal server error\n"})

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.disconnected:
                return {"type": "http.disconnect"}
            if self._body:
                chunks, size = [], 0
                while self._body:
                    data, flow_controlled = self._body.popleft()
                    chunks.append(data)
                    size += flow_controlled
                self.buffered -= size
                self.body_progress_at = self._now()
                if size:
                    self._connection.acknowledge(self.stream_id, size)
                more = not self.request_ended
                self._body_read = not more
                return {"type": "http.request", "body": b"".join(chunks), "more_body": more}
            if self.request_ended and not self._body_read:
                self._body_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            self._wake.clear()
            await self._wake.wait()

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected or self.response_complete:
            return
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            self.response_started = True
            self._trailers = bool(message.get("trailers", False))
            # Held until the first body message: a start followed by an empty final body is one HEADERS frame with
            # END_STREAM (gRPC's trailers-only response).
            self._start = (int(message["status"]), list(message.get("headers", ())))
        elif kind == "http.response.body":
            await self._send_body(bytes(message.get("body", b"")), bool(message.get("more_body", False)))
        elif kind == "http.response.trailers":
            if not self._trailers:
                raise RuntimeError("http.response.trailers without trailers in http.response.start")
            if not message.get("more_trailers", False):
                self._connection.send_headers(
                    self.stream_id, trailer_fields(message.get("headers", ())), end_stream=True
                )
                self.response_complete = True
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an http stream")

    async def _send_body(self, body: bytes, more_body: bool) -> None:
        if not self.response_started:
            raise RuntimeError("http.response.body before http.response.start")
        if self._head_only:
            body = b""
        last = not more_body and not self._trailers
        if self._start is not None:
            status, headers = self._start
            self._start = None
            fields = response_headers(status, headers)
            self._connection.send_headers(self.stream_id, fields, end_stream=last and not body)
            if last and not body:
                self.response_complete = True
                return
        elif last and not body:
            self._connection.send_data(self.stream_id, b"", end_stream=True)
            self.response_complete = True
            return
        while body and not self.disconnected:
            window = self._connection.send_window(self.stream_id)
            if window <= 0:
                if self.blocked_since is None:
                    self.blocked_since = self._now()
                self._window_opened.clear()
                await self._window_opened.wait()
                continue
            self.blocked_since = None
            chunk, body = body[:window], body[window:]
            self._connection.send_data(self.stream_id, chunk, end_stream=last and not body)
            await self._connection.writable()
        self.blocked_since = None
        if last and not self.disconnected:
            self.response_complete = True
