"""gRPC over HTTP/2, the parts a proxy needs: which requests are calls, deadlines, statuses, names and message counts.

Values in, values out (no I/O). The wire rules are those of the gRPC HTTP/2 protocol
(https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) and its status codes (doc/statuscodes.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import IntEnum

CONTENT_TYPE = b"content-type"
GRPC_TIMEOUT = b"grpc-timeout"
GRPC_STATUS = b"grpc-status"
GRPC_MESSAGE = b"grpc-message"
GRPC_CONTENT_TYPE = b"application/grpc"
# The content types a gRPC call comes with ("application/grpc" [("+proto" / "+json" / {custom})], PROTOCOL-HTTP2.md);
# gRPC-Web (application/grpc-web*) is a different protocol and is not recognised.
_CALL_CONTENT_TYPE = re.compile(rb"application/grpc(\+[a-z0-9._-]+)?\s*(;.*)?", re.IGNORECASE | re.DOTALL)
# TimeoutValue is at most 8 digits, then one unit (PROTOCOL-HTTP2.md, "Requests").
_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_UNIT_SECONDS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# grpc-message is percent-encoded: every byte outside 0x20-0x7E, and '%' itself.
_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}
FRAME_HEADER_BYTES = 5  # one flag byte, a 4-byte big-endian length (PROTOCOL-HTTP2.md, "Length-Prefixed-Message")

RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_STATUS_CODE = "rpc.grpc.status_code"
# Not OpenTelemetry names (it records messages as events): the gateway's own counts, one tag per direction.
REQUEST_MESSAGES = "grpc.request_messages"
RESPONSE_MESSAGES = "grpc.response_messages"


class Status(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# A response that is not HTTP 200 carries no gRPC status; clients derive one (doc/http-grpc-status-mapping.md).
_HTTP_TO_GRPC = {
    400: Status.INTERNAL,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.UNIMPLEMENTED,
    429: Status.UNAVAILABLE,
    502: Status.UNAVAILABLE,
    503: Status.UNAVAILABLE,
    504: Status.UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class MethodName:
    """``/package.Service/Method``, split: ``service`` is "package.Service", ``method`` is "Method"."""

    service: str
    method: str

    @property
    def span_name(self) -> str:
        return f"{self.service}/{self.method}"


def is_call(content_type: bytes | None) -> bool:
    """Whether a request with this content-type is a gRPC call (any of application/grpc's forms, not gRPC-Web)."""
    return content_type is not None and _CALL_CONTENT_TYPE.fullmatch(content_type.strip()) is not None


def parse_timeout(value: bytes) -> float | None:
    """The seconds a ``grpc-timeout`` value allows, or None when it is malformed (the caller ignores and counts)."""
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        return None
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def format_timeout(seconds: float) -> bytes:
    """A ``grpc-timeout`` value for ``seconds`` (at least 1 ns), in the finest unit that fits 8 digits."""
    nanoseconds = max(1, math.ceil(seconds * 1e9))
    for unit, per in ((b"n", 1), (b"u", 1_000), (b"m", 1_000_000), (b"S", 10**9), (b"M", 60 * 10**9)):
        # Rounded up, so that the upstream never gets more time than is left.
        amount = -(-nanoseconds // per)
        if amount < 10**8:
            return str(amount).encode() + unit
    return str(min(-(-nanoseconds // (3600 * 10**9)), 10**8 - 1)).encode() + b"H"


def parse_method(path: str) -> MethodName | None:
    """The service and method of a call's ``:path``, or None when it is not ``/Service/Method``."""
    _, slash, rest = path.partition("/")
    service, sep, method = rest.partition("/")
    if slash != "/" or path[0] != "/" or not sep or not service or not method or "/" in method:
        return None
    return MethodName(service, method)


def parse_status(value: bytes | None) -> int | None:
    """A ``grpc-status`` value as a number, None when absent or not a non-negative decimal."""
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    return int(value)


def status_for_http(status_code: int) -> Status:
    """The gRPC status a client derives from an HTTP status that is not 200."""
    return _HTTP_TO_GRPC.get(status_code, Status.UNKNOWN)


# How a stream reset maps to the status a client sees (PROTOCOL-HTTP2.md, "Errors"); any other code is INTERNAL.
_RESET_TO_GRPC = {
    0x7: Status.UNAVAILABLE,
    0x8: Status.CANCELLED,
    0xB: Status.RESOURCE_EXHAUSTED,
    0xC: Status.PERMISSION_DENIED,
}


def status_for_reset(error_code: int) -> Status:
    """The gRPC status of a call whose stream the peer reset with this HTTP/2 error code."""
    return _RESET_TO_GRPC.get(error_code, Status.INTERNAL)


def encode_message(text: str) -> bytes:
    """``grpc-message``'s percent-encoding of ``text`` (as UTF-8)."""
    return b"".join(bytes([byte]) if byte in _UNRESERVED else b"%%%02X" % byte for byte in text.encode())


def error_headers(status: Status, message: str) -> list[tuple[bytes, bytes]]:
    """The headers of a trailers-only response (HTTP 200, one HEADERS frame) carrying the gateway's own error."""
    return [
        (CONTENT_TYPE, GRPC_CONTENT_TYPE),
        (GRPC_STATUS, str(int(status)).encode()),
        (GRPC_MESSAGE, encode_message(message)),
    ]


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def rpc_tags(method: MethodName | None, status: int | None) -> tuple[tuple[str, str], ...]:
    """OpenTelemetry's RPC span attributes for a gRPC call (semantic conventions, rpc and grpc)."""
    tags = [(RPC_SYSTEM, "grpc")]
    if method is not None:
        tags += [(RPC_SERVICE, method.service), (RPC_METHOD, method.method)]
    if status is not None:
        tags.append((RPC_STATUS_CODE, str(status)))
    return tuple(tags)


class MessageCounter:
    """Counts length-prefixed messages in a stream of DATA chunks, however the chunks split the 5-byte headers."""

    __slots__ = ("messages", "_header", "_payload_left")

    def __init__(self) -> None:
        self.messages = 0
        self._header = bytearray()
        self._payload_left = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            if self._payload_left:
                taken = min(self._payload_left, len(view))
                self._payload_left -= taken
                view = view[taken:]
                continue
            wanted = FRAME_HEADER_BYTES - len(self._header)
            self._header += view[:wanted]
            view = view[wanted:]
            if len(self._header) == FRAME_HEADER_BYTES:
                # A message counts once its header is whole: its payload may still be on the way.
                self.messages += 1
                self._payload_left = int.from_bytes(self._header[1:], "big")
                self._header.clear()

    @property
    def complete(self) -> bool:
        """Whether the bytes fed so far end at a message boundary."""
        return not self._header and not self._payload_left
