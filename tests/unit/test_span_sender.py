"""HttpSpanSender against a real uvicorn server on 127.0.0.1: what counts as delivered, what is worth retrying."""

from __future__ import annotations

import gzip

import pytest

from gateway.span_payload import gzipped
from gateway.span_sender import HttpSpanSender, RejectedError, RetryableError
from tests.support import ThreadedServer, free_port

pytestmark = pytest.mark.anyio


class _Collector:
    """A minimal ASGI collector that records POST bodies and headers, answering with a scripted status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        status = self.statuses.pop(0) if self.statuses else 202
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("status", "error"), [(202, None), (503, RetryableError), (429, RetryableError), (400, RejectedError)]
)
async def test_http_sender_posts_gzipped_json_that_does_not_start_a_trace(status, error):
    collector = _Collector([status])
    with ThreadedServer(collector) as server:
        sender = HttpSpanSender(f"{server.url}/api/v2/spans", timeout=5)
        try:
            if error is None:
                await sender.send(gzipped(b"[]"))
            else:
                with pytest.raises(error):
                    await sender.send(gzipped(b"[]"))
        finally:
            await sender.aclose()
    headers, body = collector.requests[0]
    assert headers["content-type"] == "application/json"
    assert headers["content-encoding"] == "gzip"
    assert headers["b3"] == "0"
    assert gzip.decompress(body) == b"[]"


async def test_http_sender_treats_a_closed_port_as_retryable():
    sender = HttpSpanSender(f"http://127.0.0.1:{free_port()}/api/v2/spans", timeout=2)
    try:
        with pytest.raises(RetryableError):
            await sender.send(gzipped(b"[]"))
    finally:
        await sender.aclose()


class _Answer:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("status", "error"),
    [(200, None), (204, None), (301, RejectedError), (308, RejectedError), (408, RetryableError), (413, RejectedError)],
)
async def test_only_a_2xx_counts_as_delivered(status: int, error: type[Exception] | None) -> None:
    with ThreadedServer(_Answer(status, [(b"location", b"https://collector/api/v2/spans")])) as server:
        sender = HttpSpanSender(f"{server.url}/api/v2/spans", timeout=5)
        try:
            if error is None:
                await sender.send(b"[]")
            else:
                with pytest.raises(error) as raised:
                    await sender.send(b"[]")
                if status in (301, 308):
                    assert "https://collector/api/v2/spans" in str(raised.value)
        finally:
            await sender.aclose()
