from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.websocket_session import (
    TAG_CLOSE_CODE,
    TAG_CLOSE_REASON,
    TAG_CLOSED_BY,
    SessionTally,
    accepted_response_headers,
    message_size,
    offered_subprotocols,
    sendable_close_code,
    upstream_handshake_headers,
    wire_headers,
)


def test_upstream_handshake_headers_drop_host_and_the_clients_handshake_fields() -> None:
    headers = [
        (b"host", b"gw.example"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"sec-websocket-protocol", b"chat"),
        (b"origin", b"https://app.example"),
        (b"cookie", b"a=\xe9"),
    ]
    assert upstream_handshake_headers(headers) == [("origin", "https://app.example"), ("cookie", "a=\xe9")]


@pytest.mark.parametrize(
    ("headers", "offer"),
    [
        ([], []),
        ([(b"sec-websocket-protocol", b"chat.v1, chat.v2")], ["chat.v1", "chat.v2"]),
        ([(b"sec-websocket-protocol", b"a"), (b"sec-websocket-protocol", b" b ,,c")], ["a", "b", "c"]),
        ([(b"sec-websocket-protocolx", b"a")], []),
    ],
)
def test_offered_subprotocols_add_up_in_order(headers: list[tuple[bytes, bytes]], offer: list[str]) -> None:
    assert offered_subprotocols(headers) == offer


@given(st.lists(st.tuples(st.sampled_from([b"sec-websocket-protocol", b"x"]), st.binary())))
def test_offered_subprotocols_never_raise_and_hold_no_blanks(headers: list[tuple[bytes, bytes]]) -> None:
    assert all(token and token == token.strip() for token in offered_subprotocols(headers))


def test_accepted_response_headers_keep_end_to_end_fields_only() -> None:
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"sec-websocket-protocol", b"chat"),
        (b"set-cookie", b"session=1"),
        (b"traceresponse", b"00-forged"),
        (b"date", b"today"),
    ]
    assert accepted_response_headers(headers) == [(b"set-cookie", b"session=1")]


def test_wire_headers_are_lowercase_latin1_bytes() -> None:
    assert wire_headers([("X-Refused-By", "upstr\xe9am")]) == [(b"x-refused-by", b"upstr\xe9am")]


@pytest.mark.parametrize(
    ("code", "sent"),
    [(None, 1000), (1000, 1000), (1001, 1001), (1005, 1000), (1006, 1001), (1009, 1009), (1015, 1001), (4000, 4000)],
)
def test_sendable_close_code_replaces_the_codes_a_close_frame_may_not_carry(code: int | None, sent: int) -> None:
    assert sendable_close_code(code) == sent


def test_tally_counts_messages_and_bytes_each_way_and_keeps_the_first_close() -> None:
    tally = SessionTally()
    tally.from_client(message_size("héllo"))
    tally.from_client(message_size(b"\x00"))
    tally.from_upstream(message_size(b"abc"))
    assert tally.closed("upstream", 4001, "bye")
    assert not tally.closed("client", 1000, "")
    assert dict(tally.tags()) == {
        "websocket.client_messages": "2",
        "websocket.client_bytes": "7",
        "websocket.upstream_messages": "1",
        "websocket.upstream_bytes": "3",
        TAG_CLOSED_BY: "upstream",
        TAG_CLOSE_CODE: "4001",
        TAG_CLOSE_REASON: "bye",
    }
    assert tally.facts() == {
        "client_messages": 2,
        "client_bytes": 7,
        "upstream_messages": 1,
        "upstream_bytes": 3,
        "closed_by": "upstream",
        "close_code": 4001,
        "close_reason": "bye",
    }


def test_tally_of_a_session_cut_off_has_no_close_code_tag() -> None:
    tally = SessionTally()
    tally.closed("gateway", None, "send timeout")
    tags = dict(tally.tags())
    assert TAG_CLOSE_CODE not in tags
    assert tags[TAG_CLOSED_BY] == "gateway" and tags[TAG_CLOSE_REASON] == "send timeout"
