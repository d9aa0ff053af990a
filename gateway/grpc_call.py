"""One gRPC call relayed both ways: the client's messages up as a body, the upstream's down with its trailers.

What happens is recorded on the `Call` (statuses, errors, message counts, when the upstream finished) for the spans,
metrics and access line that gateway/grpc_flow.py writes. The gateway's own failures become gRPC statuses: in a
trailers-only response before the response has started, in the trailers after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.asgi import Receive, Send
from gateway.forwarding import downstream_response_headers
from gateway.grpc import (
    GRPC_STATUS,
    GRPC_TIMEOUT,
    MessageCounter,
    Status,
    error_headers,
    format_timeout,
    header,
    parse_status,
    status_for_http,
    status_for_reset,
)
from gateway.h2_upstream import UpstreamReset
from gateway.propagation.w3c import TRACERESPONSE_BYTES
from gateway.proxy import Upstream, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamTimeout

_END = object()
# The share of a deadline by which the client's own timer, started before the call reached the gateway, may be ahead.
_DEADLINE_SLACK = 0.02


class Call:
    """One call relayed both ways, with what happened recorded for spans, metrics and the access log."""

    def __init__(self, send: Send, trace_response: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._trace_response = trace_response
        self._started = False  # whether the client has had the response start
        self._ended = False  # whether the client has had the whole response
        self.http_status: int | None = None
        self.upstream_http_status: int | None = None
        self.status: int | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.upstream_finished: float | None = None
        self.request_messages = MessageCounter()
        self.response_messages = MessageCounter()

    async def run(self, upstream: Upstream, request: UpstreamRequest, receive: Receive, deadline: float | None) -> None:
        started = time.perf_counter()
        client = ClientSide(receive, self.request_messages)
        request.body = client.body()
        if deadline is not None:
            # The upstream gets what is left of the client's deadline, never more (gRPC deadline propagation).
            request.headers.append((GRPC_TIMEOUT, format_timeout(deadline)))
        watcher = asyncio.get_running_loop().create_task(client.watch(asyncio.current_task()))
        try:
            async with asyncio.timeout(deadline):
                await self._relay(upstream, request)
        except TimeoutError:
            await self._fail(Status.DEADLINE_EXCEEDED, "deadline exceeded at the gateway", "timeout")
        except UpstreamReset as exc:
            await self._fail(status_for_reset(exc.error_code), str(exc), exc.kind)
        except UpstreamTimeout as exc:
            await self._fail(Status.DEADLINE_EXCEEDED, str(exc), exc.kind)
        except UpstreamError as exc:
            await self._fail(Status.UNAVAILABLE, str(exc), exc.kind)
        except asyncio.CancelledError:
            if not client.disconnected:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            # The client reset its stream: nothing more goes to it; the upstream stream was cancelled with the relay.
            # A client cancels at its own deadline a moment before the gateway's copy of it would expire.
            expired = deadline is not None and time.perf_counter() - started >= deadline * (1 - _DEADLINE_SLACK)
            if expired:
                self.status, self.error = Status.DEADLINE_EXCEEDED, "client's deadline passed"
            else:
                self.status, self.error = Status.CANCELLED, "client cancelled"
            self.error_kind = "client_disconnected"
        finally:
            watcher.cancel()
            if self.upstream_finished is None:
                self.upstream_finished = time.perf_counter()

    async def _relay(self, upstream: Upstream, request: UpstreamRequest) -> None:
        response = await upstream.forward(request)
        try:
            await self._relay_response(response)
        finally:
            await response.aclose()

    async def _relay_response(self, response: UpstreamResponse) -> None:
        self.upstream_http_status = response.status_code
        headers = [item for item in downstream_response_headers(response.headers) if item[0] != TRACERESPONSE_BYTES]
        headers.extend(self._trace_response)
        send = self._send
        status = parse_status(header(response.headers, GRPC_STATUS))
        if status is not None:
            # Trailers-only (the upstream's HEADERS ended the stream): it goes on as one HEADERS frame too.
            async for _ in response.body():
                pass
            self.upstream_finished = time.perf_counter()
            self._set_status(status)
            self.http_status, self._started = response.status_code, True
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self._ended = True
            return
        self.http_status, self._started = response.status_code, True
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers, "trailers": True}
        )
        counter = self.response_messages
        async for chunk in response.body():
            counter.feed(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.upstream_finished = time.perf_counter()
        trailers = getattr(response, "trailers", [])
        status = parse_status(header(trailers, GRPC_STATUS))
        self._set_status(status if status is not None else status_for_http(response.status_code))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})
        self._ended = True

    def _set_status(self, status: int) -> None:
        self.status = status
        if status != Status.OK:
            # As Brave's gRPC parser tags it: the status's name, on any status but OK.
            self.error = status_name(status)

    async def _fail(self, status: Status, message: str, kind: str) -> None:
        if self._ended:
            return  # the client has its answer; what failed after it changes nothing
        self.status, self.error, self.error_kind = status, message, kind
        if not self._started:
            self.http_status = 200
            await trailers_only(self._send, status, message, self._trace_response)
        else:
            # Mid-stream: the response has begun with trailers promised; the status goes in them.
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            trailers = error_headers(status, message)[1:]  # without content-type, which the headers had
            await self._send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})
        self._ended = True


class ClientSide:
    """The client's side of a call: its request messages as a body, and a watch for it going away."""

    def __init__(self, receive: Receive, counter: MessageCounter) -> None:
        self._receive = receive
        self._counter = counter
        self._chunks: asyncio.Queue[object] = asyncio.Queue(maxsize=4)  # bounded: a slow upstream holds the client
        self.disconnected = False

    async def watch(self, call: asyncio.Task[Any] | None) -> None:
        """Reads the client until it goes away; then cancels the call (and with it the upstream stream) at once."""
        body_open = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if body_open:
                    await self._chunks.put(_END)
                if call is not None:
                    call.cancel()
                return
            if body_open:
                chunk: bytes = message.get("body", b"")
                if chunk:
                    self._counter.feed(chunk)
                    await self._chunks.put(chunk)
                if not message.get("more_body", False):
                    body_open = False
                    await self._chunks.put(_END)

    async def body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not _END:
            assert isinstance(chunk, bytes)
            yield chunk


async def trailers_only(send: Send, status: Status, message: str, extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*error_headers(status, message), *extra]})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def status_name(status: int | None) -> str:
    if status is None:
        return "none"
    try:
        return Status(status).name
    except ValueError:
        return str(status)  # a code beyond the known ones passes through as its number
