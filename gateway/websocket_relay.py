"""One proxied WebSocket session's I/O: the upstream's handshake, then messages both ways until either side closes.

The upstream side is the `websockets` client, which, unlike aiohttp's `ws_connect`, hands back the whole answer of
an upstream that refuses the upgrade (status, headers and body), so the client gets that answer as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from http import HTTPStatus
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State
from websockets.typing import Subprotocol

from gateway import client_guard
from gateway.asgi import Message, Receive, Scope, Send
from gateway.forwarding import downstream_response_headers
from gateway.http_relay import text_headers
from gateway.propagation.w3c import TRACERESPONSE_BYTES
from gateway.routes import Upstream
from gateway.settings import Settings
from gateway.websocket_session import (
    CLOSED_BY_CLIENT,
    CLOSED_BY_GATEWAY,
    CLOSED_BY_UPSTREAM,
    GOING_AWAY,
    SessionTally,
    accepted_response_headers,
    message_size,
    offered_subprotocols,
    sendable_close_code,
    wire_headers,
)

IDLE_REASON = "idle timeout"
SHUTDOWN_REASON = "gateway shutting down"
HTTP_RESPONSE_EXTENSION = "websocket.http.response"
SWITCHING_PROTOCOLS = 101
# The upstream hop's keepalive: a dead upstream is noticed within these seconds (websockets' defaults).
UPSTREAM_PING_INTERVAL = 20.0
_REFUSAL_DROPPED = frozenset({b"content-length", b"date", b"server", TRACERESPONSE_BYTES})
# uvicorn writes the reason phrase from its own table, which knows the registered codes only.
_KNOWN_STATUSES = frozenset(status.value for status in HTTPStatus)

logger = logging.getLogger("gateway.websocket")


class SessionRelay:
    """One session: the upstream's handshake, then the messages both ways until either side closes."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        trace_response: list[tuple[bytes, bytes]],
        settings: Settings,
        client_closed: asyncio.Event,
    ) -> None:
        self._client_closed = client_closed
        self._scope = scope
        self._receive = receive
        self._send = send
        self._trace_response = trace_response
        self._send_timeout = settings.client_send_timeout
        self._idle_timeout = settings.websocket_idle_timeout
        self._max_size = settings.websocket_max_message_bytes
        self._last_message = asyncio.get_running_loop().time()
        self.tally = SessionTally()
        self.status: int | None = None
        self.upstream_status: int | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.upstream_finished: float | None = None

    async def run(
        self,
        upstream: Upstream,
        host: str,
        target: str,
        headers: list[tuple[str, str]],
        timeout: float | None,
        going_away: asyncio.Event,
    ) -> None:
        connection = await self._open(upstream, host, target, headers, timeout)
        if connection is None:
            return
        try:
            try:
                await self._accept(connection)
            except OSError:
                self.tally.closed(CLOSED_BY_CLIENT, None, "client gone before the upgrade completed")
                self._fail("client disconnected", "client_disconnected")
                return
            await self._relay(connection, going_away)
        finally:
            # A no-op after a close handshake; else the client is gone (cut off, or the task cancelled).
            await connection.close(GOING_AWAY, self.tally.close_reason)
            self.upstream_finished = time.perf_counter()

    async def _open(
        self, upstream: Upstream, host: str, target: str, headers: list[tuple[str, str]], timeout: float | None
    ) -> ClientConnection | None:
        subprotocols = offered_subprotocols(self._scope["headers"])
        try:
            return await _connect(upstream, host, target, headers, subprotocols, timeout, self._max_size)
        except InvalidStatus as refusal:
            answer = refusal.response
            self.upstream_status = answer.status_code
            passed = downstream_response_headers(wire_headers(answer.headers.raw_items()))
            kept = [header for header in passed if header[0] not in _REFUSAL_DROPPED]
            await self._refuse(answer.status_code, kept, bytes(answer.body))
        except TimeoutError:
            self._fail("upstream timed out", "timeout")
            await self._refuse_text(HTTPStatus.GATEWAY_TIMEOUT, "upstream timed out")
        except (OSError, InvalidHandshake, InvalidURI, ValueError) as exc:
            self._fail(f"upstream unreachable: {exc}", "unreachable")
            await self._refuse_text(HTTPStatus.BAD_GATEWAY, "upstream unreachable")
        return None

    async def _accept(self, connection: ClientConnection) -> None:
        response = connection.response
        extra = []
        if response is not None:
            self.upstream_status = response.status_code
            extra = accepted_response_headers(wire_headers(response.headers.raw_items()))
        message: Message = {"type": "websocket.accept", "headers": extra + self._trace_response}
        if connection.subprotocol is not None:
            message["subprotocol"] = connection.subprotocol
        await self._to_client(message)
        self.status = SWITCHING_PROTOCOLS

    async def _relay(self, connection: ClientConnection, going_away: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        from_client = loop.create_task(self._client_to_upstream(connection))
        from_upstream = loop.create_task(self._upstream_to_client(connection))
        stopping = loop.create_task(going_away.wait())
        pumps = {from_client, from_upstream}
        try:
            while True:
                idle_left = self._last_message + self._idle_timeout - loop.time()
                done, _ = await asyncio.wait(
                    {*pumps, stopping}, timeout=max(idle_left, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                if done & pumps:
                    break
                if stopping in done:
                    await self._close_both(connection, GOING_AWAY, SHUTDOWN_REASON)
                    break
                if loop.time() - self._last_message >= self._idle_timeout:
                    await self._close_both(connection, GOING_AWAY, IDLE_REASON)
                    break
            # The first pump to end has closed the other hop; the second ends on that close, within a bound.
            await asyncio.wait(pumps, timeout=self._send_timeout)
        finally:
            for task in (*pumps, stopping):
                task.cancel()
            for task in pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                if task.done() and not task.cancelled():
                    _log_unexpected(task.exception())

    async def _client_to_upstream(self, connection: ClientConnection) -> None:
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                self._last_message = asyncio.get_running_loop().time()
                self.tally.from_client(message_size(data))
                try:
                    await connection.send(data)
                except ConnectionClosed as closed:
                    await self._upstream_closed(closed)
                    return
            elif kind == "websocket.disconnect":
                code: int | None = message.get("code")
                reason: str = message.get("reason") or ""
                if self.tally.closed(CLOSED_BY_CLIENT, code, reason):
                    await connection.close(sendable_close_code(code), reason)
                return

    async def _upstream_to_client(self, connection: ClientConnection) -> None:
        while True:
            try:
                data = await connection.recv()
            except ConnectionClosed as closed:
                await self._upstream_closed(closed)
                return
            self._last_message = asyncio.get_running_loop().time()
            self.tally.from_upstream(message_size(data))
            if isinstance(data, str):
                await self._to_client({"type": "websocket.send", "text": data})
            else:
                await self._to_client({"type": "websocket.send", "bytes": data})

    async def _upstream_closed(self, closed: ConnectionClosed) -> None:
        # Whichever close frame came first: the upstream's (it closed) or the gateway's (e.g. a message too big).
        received, sent = closed.rcvd, closed.sent
        if received is not None and (sent is None or closed.rcvd_then_sent):
            by, code, reason = CLOSED_BY_UPSTREAM, int(received.code), received.reason
        elif sent is not None:
            by, code, reason = CLOSED_BY_GATEWAY, int(sent.code), sent.reason
        else:
            by, code, reason = CLOSED_BY_UPSTREAM, None, ""
        if self.tally.closed(by, code, reason):
            await self._close_client(sendable_close_code(code) if code is not None else GOING_AWAY, reason)

    async def _close_both(self, connection: ClientConnection, code: int, reason: str) -> None:
        self.tally.closed(CLOSED_BY_GATEWAY, code, reason)
        await self._close_client(code, reason)
        if connection.state is State.OPEN:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(code, reason), self._send_timeout)

    async def _close_client(self, code: int, reason: str) -> None:
        try:
            with contextlib.suppress(OSError):
                await self._to_client({"type": "websocket.close", "code": code, "reason": reason})
        finally:
            self._client_closed.set()

    async def _to_client(self, message: Message) -> None:
        # uvicorn's send waits while the client's socket buffer is full: a client that reads nothing for
        # GATEWAY_CLIENT_SEND_TIMEOUT seconds is cut off, as an HTTP response's reader is.
        try:
            await asyncio.wait_for(self._send(message), self._send_timeout)
        except TimeoutError:
            self.tally.closed(CLOSED_BY_GATEWAY, None, "send timeout")
            self._fail("client stopped reading", "client_disconnected")
            client_guard.cut_off(self._scope.get("client"))
            raise OSError("client stopped reading") from None

    async def _refuse(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        with contextlib.suppress(OSError):  # the client may have gone while the upstream was asked
            await refuse(self._scope, self._send, status, headers + self._trace_response, body)

    async def _refuse_text(self, status: HTTPStatus, text: str) -> None:
        body = f"{text}\n".encode()
        await self._refuse(status, text_headers(body), body)

    def _fail(self, error: str, kind: str) -> None:
        self.error, self.error_kind = error, kind


async def refuse(scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """An HTTP answer instead of the upgrade; a server without the ASGI extension can only close (a 403)."""
    if HTTP_RESPONSE_EXTENSION not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    if status not in _KNOWN_STATUSES:
        status = HTTPStatus.BAD_GATEWAY
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


async def _connect(
    upstream: Upstream,
    host: str,
    target: str,
    headers: list[tuple[str, str]],
    subprotocols: list[str],
    timeout: float | None,
    max_size: int,
) -> ClientConnection:
    secure = upstream.scheme == "https"
    # The URI's authority is the Host the upstream sees; the socket goes to the route's upstream whatever it says.
    uri = f"{'wss' if secure else 'ws'}://{host}{upstream.base_path}{target}"
    options: dict[str, Any] = {"host": upstream.host, "port": upstream.port}
    if secure:
        options["server_hostname"] = upstream.host
    return await connect(
        uri,
        additional_headers=headers,
        user_agent_header=None,
        subprotocols=[Subprotocol(offer) for offer in subprotocols] or None,
        compression=None,  # in the cluster bandwidth is cheap and CPU is not; the client's hop negotiates its own
        open_timeout=timeout,
        ping_interval=UPSTREAM_PING_INTERVAL,
        max_size=max_size,
        proxy=None,
        **options,
    )


def _log_unexpected(exc: BaseException | None) -> None:
    # A peer going away mid-send is how sessions end; anything else is a bug worth a traceback.
    if exc is not None and not isinstance(exc, OSError | ConnectionClosed):
        logger.error("WebSocket relay failed", exc_info=exc)
