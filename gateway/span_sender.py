"""The collector seam: ``send(payload)`` delivers a gzipped document of spans or says whether trying again may help.

As ``py_zipkin/transport.py`` puts the collector behind one method, so that the reporter neither knows the wire nor
the format, and tests and the dev mesh pass their own senders.
"""

from __future__ import annotations

from typing import Protocol

from gateway.collector_post import CollectorAnswer, CollectorPost, PostFailed

_RETRYABLE_STATUSES = frozenset({408, 429})
# The reporter's own requests must not start traces in a meshed collector: a B3 "deny" decision.
_SPAN_POST_HEADERS = (("content-type", "application/json"), ("content-encoding", "gzip"), ("b3", "0"))


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
    """POSTs gzip-compressed Zipkin v2 JSON to the collector."""

    def __init__(self, url: str, timeout: float) -> None:
        self._post = CollectorPost(url, _SPAN_POST_HEADERS, timeout)

    async def send(self, payload: bytes) -> None:
        answer = await post_payload(self._post, payload)
        status = answer.status
        if 200 <= status < 300:
            return
        if status in _RETRYABLE_STATUSES or status >= 500:
            raise RetryableError(f"collector answered {status}")
        if 300 <= status < 400:
            # Redirects are not followed: a 3xx taken for success would count spans reported that went nowhere.
            location = answer.header("location")
            raise RejectedError(f"collector answered {status} to {location!r}: GATEWAY_ZIPKIN_URL should be the target")
        raise RejectedError(f"collector answered {status}: {answer.text[:200]}")

    async def aclose(self) -> None:
        await self._post.aclose()


async def post_payload(post: CollectorPost, payload: bytes) -> CollectorAnswer:
    """POSTs a batch; a connection that fails or times out is a RetryableError (the collector may be back soon)."""
    try:
        return await post.post(payload)
    except PostFailed as exc:
        raise RetryableError(str(exc)) from exc
