"""The collector seam: ``send(payload)`` delivers a gzipped document of spans or says whether trying again may help.

As ``py_zipkin/transport.py`` puts the collector behind one method, so that the reporter neither knows the wire nor
the format, and tests and the dev mesh pass their own senders.
"""

from __future__ import annotations

from typing import Protocol

import httpx

_RETRYABLE_STATUSES = frozenset({408, 429})
# The reporter's own requests must not start traces in a meshed collector: a B3 "deny" decision.
_SPAN_POST_HEADERS = {"content-type": "application/json", "content-encoding": "gzip", "b3": "0"}


class RetryableError(Exception):
    """The collector may accept the same batch later (5xx, 408, 429, connection errors, timeouts).

    ``retry_after`` is the collector's Retry-After in seconds, when it said one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(Exception):
    """The collector refused the batch (any other 4xx, or a redirect): sending it again would not help."""


class SpanSender(Protocol):
    async def send(self, payload: bytes) -> int | None:
        """Delivers ``payload``, a gzip-compressed document of spans, or raises one of the errors above; returns
        how many of its spans the collector accepted the request but refused (an OTLP partial success), if any."""
        ...

    async def aclose(self) -> None: ...


class HttpSpanSender:
    """POSTs gzip-compressed Zipkin v2 JSON to the collector with httpx."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False, headers=_SPAN_POST_HEADERS)

    async def send(self, payload: bytes) -> None:
        response = await post_payload(self._client, self._url, payload)
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in _RETRYABLE_STATUSES or status >= 500:
            raise RetryableError(f"collector answered {status}")
        if 300 <= status < 400:
            # Redirects are not followed: a 3xx taken for success would count spans reported that went nowhere.
            location = response.headers.get("location", "")
            raise RejectedError(f"collector answered {status} to {location!r}: GATEWAY_ZIPKIN_URL should be the target")
        raise RejectedError(f"collector answered {status}: {response.text[:200]}")

    async def aclose(self) -> None:
        await self._client.aclose()


async def post_payload(client: httpx.AsyncClient, url: str, payload: bytes) -> httpx.Response:
    """POSTs a batch; a connection that fails or times out is a RetryableError (the collector may be back soon)."""
    try:
        return await client.post(url, content=payload)
    except httpx.TransportError as exc:
        raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
