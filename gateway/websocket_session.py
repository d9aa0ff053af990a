"""The pure side of a proxied WebSocket session: the upstream handshake's headers, close codes, the session's tally.

No sockets here: `websocket_proxy.py` feeds these the headers and messages it sees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]

SEC_WEBSOCKET_PROTOCOL = b"sec-websocket-protocol"
# Each hop negotiates its own key, version and extensions (RFC 6455 4.1, 9.1): the client's are for the gateway.
_HANDSHAKE_HEADER_PREFIX = b"sec-websocket-"
CLOSED_BY_CLIENT = "client"
CLOSED_BY_UPSTREAM = "upstream"
CLOSED_BY_GATEWAY = "gateway"

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
NO_STATUS_RECEIVED = 1005
ABNORMAL_CLOSURE = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TLS_HANDSHAKE = 1015
# Codes that RFC 6455 7.4.1 forbids in a Close frame, and what goes on the other hop instead: a close without a code
# is a normal one; a peer that vanished (or failed TLS) has gone away.
_UNSENDABLE = {NO_STATUS_RECEIVED: NORMAL_CLOSURE, ABNORMAL_CLOSURE: GOING_AWAY, TLS_HANDSHAKE: GOING_AWAY}

TAG_CLOSED_BY = "websocket.closed_by"
TAG_CLOSE_CODE = "websocket.close_code"
TAG_CLOSE_REASON = "websocket.close_reason"
TAG_CLIENT_MESSAGES = "websocket.client_messages"
TAG_CLIENT_BYTES = "websocket.client_bytes"
TAG_UPSTREAM_MESSAGES = "websocket.upstream_messages"
TAG_UPSTREAM_BYTES = "websocket.upstream_bytes"


def upstream_handshake_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The forwarded request headers for the upstream's handshake, less Host and the Sec-WebSocket-* fields, which
    the WebSocket client writes itself (Host from the URI, the subprotocol offer from ``offered_subprotocols``)."""
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name != b"host" and not name.startswith(_HANDSHAKE_HEADER_PREFIX)
    ]


def offered_subprotocols(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The client's Sec-WebSocket-Protocol offer, in order (several header lines add up, as RFC 6455 11.3.4 says)."""
    offer: list[str] = []
    for name, value in headers:
        if name == SEC_WEBSOCKET_PROTOCOL:
            offer.extend(token.strip() for token in value.decode("latin-1").split(",") if token.strip())
    return offer


def accepted_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The upstream's 101 headers worth passing to the client (e.g. Set-Cookie): not the handshake's own fields,
    which uvicorn writes for the client's hop, nor the gateway's traceresponse."""
    return [
        (name, value)
        for name, value in headers
        if not name.startswith(_HANDSHAKE_HEADER_PREFIX) and name not in _HANDSHAKE_RESPONSE_FIELDS
    ]


_HANDSHAKE_RESPONSE_FIELDS = frozenset(
    {b"upgrade", b"connection", b"date", b"server", b"content-length", b"transfer-encoding", b"traceresponse"}
)


def wire_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """A WebSocket library's header pairs as ASGI's: lowercase latin-1 bytes."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def sendable_close_code(code: int | None) -> int:
    """The code to close the other hop with, when one hop closed with ``code`` (None: no code)."""
    if code is None:
        return NORMAL_CLOSURE
    return _UNSENDABLE.get(code, code)


@dataclass(slots=True)
class SessionTally:
    """What passed through one session and how it ended, for its spans and its access line."""

    client_messages: int = 0
    client_bytes: int = 0
    upstream_messages: int = 0
    upstream_bytes: int = 0
    closed_by: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    _ended: bool = field(default=False, repr=False)

    def from_client(self, size: int) -> None:
        self.client_messages += 1
        self.client_bytes += size

    def from_upstream(self, size: int) -> None:
        self.upstream_messages += 1
        self.upstream_bytes += size

    def closed(self, by: str, code: int | None, reason: str = "") -> bool:
        """Records the first close only (the other hop's close follows from it); True if this one was the first."""
        if self._ended:
            return False
        self._ended = True
        self.closed_by, self.close_code, self.close_reason = by, code, reason
        return True

    def facts(self) -> dict[str, object]:
        """The session's facts for its access line."""
        return {
            "client_messages": self.client_messages,
            "client_bytes": self.client_bytes,
            "upstream_messages": self.upstream_messages,
            "upstream_bytes": self.upstream_bytes,
            "closed_by": self.closed_by,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
        }

    def tags(self) -> tuple[tuple[str, str], ...]:
        tags = [
            (TAG_CLIENT_MESSAGES, str(self.client_messages)),
            (TAG_CLIENT_BYTES, str(self.client_bytes)),
            (TAG_UPSTREAM_MESSAGES, str(self.upstream_messages)),
            (TAG_UPSTREAM_BYTES, str(self.upstream_bytes)),
        ]
        if self.closed_by is not None:
            tags.append((TAG_CLOSED_BY, self.closed_by))
        if self.close_code is not None:
            tags.append((TAG_CLOSE_CODE, str(self.close_code)))
        if self.close_reason:
            tags.append((TAG_CLOSE_REASON, self.close_reason))
        return tuple(tags)


def message_size(message: str | bytes) -> int:
    """A message's size on the wire: UTF-8 bytes for text."""
    return len(message.encode()) if isinstance(message, str) else len(message)
