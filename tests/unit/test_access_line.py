"""The access line built as bytes is the line `JsonFormatter` wrote for a `gateway.access` record."""

from __future__ import annotations

import json
import logging

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.access_line import access_line
from gateway.logs import ACCESS_LOGGER, JsonFormatter

# Up to "~": json.dumps escaped DEL (0x7f) and above; orjson writes them as they are (UTF-8).
ASCII_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x7E), max_size=40)
ANY_TEXT = st.text(max_size=40)  # lone surrogates included
# Wall-clock times: Python and orjson differ only in the exponent notation of floats below 1e-4 (1e-05, 1e-5)
TIMES = st.floats(min_value=1e6, max_value=4e9, allow_nan=False)
DURATIONS = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)
TRACE_IDS = st.integers(min_value=1, max_value=2**128 - 1)
STATUSES = st.none() | st.integers(min_value=100, max_value=599)


def formatted_as_before(
    ts: float,
    method: str,
    path: str,
    status: int | None,
    duration: float,
    trace_id: int,
    route: str,
    sampled: bool,
    reason: str,
    client: str | None,
    error: str | None,
) -> str:
    """The line the gateway logged through `logging` before the access log left it (app.py's `_log_access`)."""
    record = logging.getLogger(ACCESS_LOGGER).makeRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        1,
        "%s %s %s",
        (method, path, status),
        None,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "trace_id": f"{trace_id:032x}" if trace_id >> 64 else f"{trace_id:016x}",
            "route": route,
            "sampled": sampled,
            "reason": reason,
            "client": client,
            "error": error,
        },
    )
    record.created = ts
    return JsonFormatter().format(record) + "\n"


@given(
    ts=TIMES,
    method=ASCII_TEXT,
    path=ASCII_TEXT,
    status=STATUSES,
    duration=DURATIONS,
    trace_id=TRACE_IDS,
    route=ASCII_TEXT,
    sampled=st.booleans(),
    reason=ASCII_TEXT,
    client=st.none() | ASCII_TEXT,
    error=st.none() | ASCII_TEXT,
)
@example(1764849968.1234567, "GET", '/a\nb"c\\', 200, 0.0012345, 0xABC, "default", True, "ratio", "10.0.0.1", None)
@example(1.0, "POST", "/", None, 30.0, 2**64, "api", False, "ratio", None, "upstream timed out")
def test_an_ascii_line_is_byte_for_byte_the_old_one(
    ts, method, path, status, duration, trace_id, route, sampled, reason, client, error
):
    args = (ts, method, path, status, duration, trace_id, route, sampled, reason, client, error)
    assert access_line(*args).decode() == formatted_as_before(*args)


@given(path=ANY_TEXT, route=ANY_TEXT, client=st.none() | ANY_TEXT, error=st.none() | ANY_TEXT)
@example(path="/caf\u00e9", route="r", client=None, error=None)
@example(path="/\ud800", route="r", client=None, error="\udfff")
def test_any_text_gives_one_line_with_the_old_values(path, route, client, error):
    args = (1764849968.5, "GET", path, 502, 0.25, 0x1234, route, True, "ratio", client, error)
    line = access_line(*args)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == json.loads(formatted_as_before(*args))


def test_the_keys_come_in_the_old_order():
    line = json.loads(access_line(1.5, "GET", "/x", 200, 0.001, 1, "default", False, "ratio", "1.2.3.4", None))
    assert list(line) == [
        "ts",
        "level",
        "logger",
        "msg",
        "method",
        "path",
        "status",
        "duration_ms",
        "trace_id",
        "route",
        "sampled",
        "reason",
        "client",
        "error",
    ]
    assert line["msg"] == "GET /x 200"
    assert line["trace_id"] == "0000000000000001"


def test_a_websocket_sessions_line_adds_its_facts_last_and_changes_nothing_else():
    facts = {"client_messages": 2, "closed_by": "client", "close_code": 4000, "close_reason": "bye"}
    plain = json.loads(access_line(1.5, "GET", "/ws", 101, 2.0, 1, "live", True, "ratio", "1.2.3.4", None))
    session = json.loads(access_line(1.5, "GET", "/ws", 101, 2.0, 1, "live", True, "ratio", "1.2.3.4", None, facts))
    assert list(session) == [*plain, "websocket"]
    assert session == {**plain, "websocket": facts}
