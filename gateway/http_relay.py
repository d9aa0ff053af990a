"""One HTTP exchange with the upstream, relayed to the client, with a watch that cancels it when the client leaves.

What happens is recorded on the `Relay` (statuses, the error and its kind, when the upstream finished) for the spans,
metrics and access line that gateway/http_flow.py writes. The upstream's failures become the gateway's 502 and 504.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from gateway.asgi import Receive, Send
from gateway.forwarding import downstream_response_headers
from gateway.propagation.w3c import TRACERESPONSE_BYTES
from gateway.proxy import Upstream, UpstreamError, UpstreamRequest, UpstreamResponse

WATCH_AFTER = 0.05


class ClientDisconnected(Exception):
    """The client went away before the exchange finished."""


class Relay:
    """One exchange with the upstream, relayed to the client, with what happened recorded for span and log."""

    __slots__ = (
        "_send",
        "_loop",
        "_extra_headers",
        "status",
        "upstream_status",
        "error",
        "error_kind",
        "upstream_finished",
        "_watch",
    )

    def __init__(self, send: Send, extra_headers: list[tuple[bytes, bytes]], loop: asyncio.AbstractEventLoop) -> None:
        self._send = send
        self._loop = loop
        self._extra_headers = extra_headers
        self.status: int | None = None
        self.upstream_status: int | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.upstream_finished: float | None = None
        self._watch: DisconnectWatch | None = None

    async def run(
        self,
        upstream: Upstream,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        timeout: float | None,
    ) -> None:
        response: UpstreamResponse | None = None
        try:
            body = await self._request_body(receive)
            response = await upstream.forward(UpstreamRequest(method, url, headers, body, timeout))
            await self._relay(response)
        except UpstreamError as exc:
            self._fail(str(exc), exc.kind)
            if self.status is None:
                await self._error_response(exc.status, str(exc))
        except ClientDisconnected:
            self._fail("client disconnected", "client_disconnected")
        except asyncio.CancelledError:
            if self._watch is None or not self._watch.fired:
                raise
            # Our own watcher cancelled the exchange because the client left: not a shutdown, so carry on.
            task = asyncio.current_task(self._loop)
            if task is not None:
                task.uncancel()
            self._fail("client disconnected", "client_disconnected")
        finally:
            if self._watch is not None:
                self._watch.stop()
            if response is not None:
                await response.aclose()
            if self.upstream_finished is None:
                self.upstream_finished = time.perf_counter()

    async def _request_body(self, receive: Receive) -> AsyncIterator[bytes] | None:
        first = await receive()
        if first["type"] == "http.disconnect":
            raise ClientDisconnected
        if not first.get("more_body", False):
            self._watch = DisconnectWatch(receive, self._loop)
            body: bytes = first.get("body", b"")
            return _once(body) if body else None
        return self._stream_body(first.get("body", b""), receive)

    async def _stream_body(self, first: bytes, receive: Receive) -> AsyncIterator[bytes]:
        if first:
            yield first
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self._watch = DisconnectWatch(receive, self._loop)
                return

    async def _relay(self, response: UpstreamResponse) -> None:
        self.status = self.upstream_status = response.status_code
        headers = downstream_response_headers(response.headers)
        if self._extra_headers:
            # The gateway's traceresponse replaces any the upstream sent: one trace, one answer.
            headers = [header for header in headers if header[0] != TRACERESPONSE_BYTES]
            headers.extend(self._extra_headers)
        send = self._send
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        async for chunk in response.body():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.upstream_finished = time.perf_counter()
        if self._watch is not None:
            self._watch.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _fail(self, error: str, kind: str) -> None:
        self.error = error
        self.error_kind = kind

    async def _error_response(self, status: int, reason: str) -> None:
        self.status = status
        await plain_response(self._send, status, f"{reason}\n", self._extra_headers)


class DisconnectWatch:
    """Cancels the exchange's task when the client disconnects, so that the upstream call is cancelled too.

    Most exchanges end within milliseconds, and a task per request is a measurable share of the gateway's cost,
    so the watching task starts only once the exchange has lasted WATCH_AFTER seconds: a client that leaves a
    quick exchange costs the upstream nothing worth cancelling. The loop is passed in: on Python 3.11 asking
    asyncio for the running loop (as `current_task()` does) makes a getpid() system call, two per request here.
    """

    __slots__ = ("fired", "_receive", "_loop", "_target", "_timer", "_task")

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        self.fired = False
        self._receive = receive
        self._loop = loop
        self._target = asyncio.current_task(loop)
        self._task: asyncio.Task[None] | None = None
        self._timer = loop.call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._task = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.fired = True
        if self._target is not None:
            self._target.cancel()

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def plain_response(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    """The gateway's own answer (no route, upstream failed): ``text`` as text/plain, with ``extra`` headers."""
    body = text.encode()
    headers = text_headers(body)
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def text_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
