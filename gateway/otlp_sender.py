"""OTLP/HTTP export: POSTs gzip-compressed protobuf ``ExportTraceServiceRequest`` bodies, as the OTLP spec asks.

Retried, with the reporter's backoff: 429, 502, 503 and 504 (honouring Retry-After), and transport errors. Any other
status is a refusal: retrying would not help. A 200 may carry a partial success, whose refused span count is handed
back to the reporter, which counts and logs it. The configured headers (often an API key) are never logged.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from gateway.collector_post import CollectorAnswer, CollectorPost
from gateway.span_sender import RejectedError, RetryableError, post_payload

PROTOBUF = "application/x-protobuf"
# The OTLP/HTTP spec's retryable statuses ("Retryable Response Codes"); every other failure is final.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
_POST_HEADERS = (("content-type", PROTOBUF), ("content-encoding", "gzip"), ("b3", "0"))
_GATEWAY_HEADER_NAMES = frozenset(name for name, _ in _POST_HEADERS)


class OtlpHttpSender:
    def __init__(self, url: str, headers: Sequence[tuple[str, str]], timeout: float) -> None:
        # The user's headers first, but not those naming the body's type and encoding, which the gateway decides (nor
        # b3, which keeps the export out of traces): sent twice, the user's would be the one most servers read.
        own = [(name, value) for name, value in headers if name.lower() not in _GATEWAY_HEADER_NAMES]
        self._post = CollectorPost(url, [*own, *_POST_HEADERS], timeout)

    async def send(self, payload: bytes) -> int | None:
        answer = await post_payload(self._post, payload)
        status = answer.status
        if 200 <= status < 300:
            return _refused_spans(answer)
        if status in RETRYABLE_STATUSES:
            raise RetryableError(f"OTLP collector answered {status}", _retry_after(answer.header("retry-after")))
        if 300 <= status < 400:
            location = answer.header("location")
            raise RejectedError(
                f"OTLP collector answered {status} to {location!r}: GATEWAY_OTLP_URL should be the target"
            )
        raise RejectedError(f"OTLP collector answered {status}: {_status_message(answer)}")

    async def aclose(self) -> None:
        await self._post.aclose()


def _refused_spans(answer: CollectorAnswer) -> int:
    """The partial success's ``rejected_spans`` of a protobuf answer; 0 for an empty or JSON one."""
    if not answer.body or not answer.header("content-type").startswith(PROTOBUF):
        return 0
    message = ExportTraceServiceResponse()
    try:
        message.ParseFromString(answer.body)
    except DecodeError:
        return 0
    return int(message.partial_success.rejected_spans)


def _retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a delay, or an HTTP date (RFC 9110 10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _status_message(answer: CollectorAnswer) -> str:
    """The start of the collector's answer (a google.rpc.Status, as text when it is JSON)."""
    return answer.text[:200]
