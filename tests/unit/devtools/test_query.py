from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from gateway_devtools.collector.model import Annotation, Endpoint, Span
from gateway_devtools.collector.query import (
    DEFAULT_LIMIT,
    DEFAULT_LOOKBACK_MS,
    QueryError,
    TraceQuery,
    parse_annotation_query,
    parse_trace_id,
    parse_trace_ids,
    parse_trace_query,
    required_service_name,
)

NOW_MS = 1_700_000_000_000


def test_defaults_are_zipkins():
    assert parse_trace_query({}, NOW_MS) == TraceQuery(end_ts=NOW_MS, lookback=DEFAULT_LOOKBACK_MS, limit=10)
    assert DEFAULT_LIMIT == 10
    assert DEFAULT_LOOKBACK_MS == 24 * 3600 * 1000


def test_every_parameter_is_read():
    params = {
        "serviceName": "Web",
        "remoteServiceName": "Emoji",
        "spanName": "GET /api",
        "annotationQuery": "http.method=GET and error",
        "minDuration": "100",
        "maxDuration": "200",
        "endTs": "1600000000000",
        "lookback": "60000",
        "limit": "3",
    }

    assert parse_trace_query(params, NOW_MS) == TraceQuery(
        end_ts=1_600_000_000_000,
        lookback=60_000,
        limit=3,
        service_name="web",
        remote_service_name="emoji",
        span_name="get /api",
        annotation_query=(("http.method", "GET"), ("error", "")),
        min_duration=100,
        max_duration=200,
    )


def test_empty_parameters_mean_absent():
    assert parse_trace_query({"serviceName": "", "limit": "", "endTs": ""}, NOW_MS) == parse_trace_query({}, NOW_MS)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": "ten"}, "limit must be an integer, got 'ten'"),
        ({"limit": "0"}, "limit must be positive, got 0"),
        ({"limit": "1.5"}, "limit must be an integer"),
        ({"limit": " 5"}, "limit must be an integer"),
        ({"limit": "5_0"}, "limit must be an integer"),
        ({"endTs": "-1"}, "endTs must be positive, got -1"),
        ({"lookback": "99999999999999999999999"}, "lookback must be an integer"),
        ({"minDuration": "0"}, "minDuration must be positive"),
        ({"maxDuration": "100"}, "maxDuration is only valid with minDuration"),
        ({"minDuration": "100", "maxDuration": "99"}, "maxDuration is less than minDuration"),
    ],
)
def test_bad_parameters_are_refused_with_a_reason(params, reason):
    with pytest.raises(QueryError) as caught:
        parse_trace_query(params, NOW_MS)

    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("", ()),
        ("error", (("error", ""),)),
        ("http.uri=/foo and retried", (("http.uri", "/foo"), ("retried", ""))),
        ("a=b=c", (("a", "b=c"),)),
        ("http.status_code=500 and  and error", (("http.status_code", "500"), ("error", ""))),
    ],
)
def test_annotation_query_splits_on_and(text, terms):
    assert parse_annotation_query(text) == terms


def test_service_name_is_required_where_the_spec_says_so():
    assert required_service_name({"serviceName": "Web"}) == "web"
    with pytest.raises(QueryError, match="serviceName is required"):
        required_service_name({})


@pytest.mark.parametrize(
    ("text", "trace_id"),
    [
        ("4e441824ec2b6a44", 0x4E441824EC2B6A44),
        ("4E441824EC2B6A44", 0x4E441824EC2B6A44),
        ("00000000000000004e441824ec2b6a44", 0x4E441824EC2B6A44),
        ("4e441824ec2b6a44ffdc9bb9a6453df3", 0x4E441824EC2B6A44FFDC9BB9A6453DF3),
    ],
)
def test_trace_id_in_a_url_is_read_in_either_case(text, trace_id):
    assert parse_trace_id(text) == trace_id


@pytest.mark.parametrize("text", ["", "xyz", "0" * 16, "1" * 33, "0x12", "12-34"])
def test_bad_trace_id_in_a_url_is_refused(text):
    with pytest.raises(QueryError, match="is not 16 or 32 hex characters"):
        parse_trace_id(text)


def test_trace_many_wants_two_distinct_ids():
    assert parse_trace_ids({"traceIds": "000000000000000a, 000000000000000b"}) == [10, 11]
    for bad in ("000000000000000a", "000000000000000a,000000000000000a", ""):
        with pytest.raises(QueryError, match="at least two distinct trace ids"):
            parse_trace_ids({"traceIds": bad})


# --- which traces a query selects ------------------------------------------------------------------------------------


def span(
    span_id: int,
    service: str = "web",
    name: str = "get",
    remote: str | None = None,
    duration: int | None = None,
    tags: Sequence[tuple[str, str]] = (),
    annotations: Sequence[str] = (),
) -> Span:
    return Span(
        trace_id=1,
        id=span_id,
        name=name,
        duration=duration,
        local_endpoint=Endpoint(service_name=service),
        remote_endpoint=Endpoint(service_name=remote) if remote else None,
        tags=tuple(tags),
        annotations=tuple(Annotation(1, value) for value in annotations),
    )


TRACE = [
    span(1, "gateway", "get /", remote="web", duration=900, tags=[("http.method", "GET")]),
    span(2, "web", "get /api/list", remote="emoji", duration=300, tags=[("error", "timeout")], annotations=["retry"]),
    span(3, "emoji", "listall", duration=50),
]


def query(**fields: Any) -> TraceQuery:
    return TraceQuery(end_ts=NOW_MS, lookback=DEFAULT_LOOKBACK_MS, **fields)


@pytest.mark.parametrize(
    ("fields", "selected"),
    [
        ({}, True),
        ({"service_name": "web"}, True),
        ({"service_name": "voting"}, False),
        ({"span_name": "listall"}, True),
        ({"service_name": "web", "span_name": "listall"}, False),
        ({"service_name": "emoji", "span_name": "listall"}, True),
        ({"remote_service_name": "emoji"}, True),
        ({"service_name": "gateway", "remote_service_name": "emoji"}, False),
        ({"min_duration": 900}, True),
        ({"min_duration": 901}, False),
        ({"min_duration": 100, "max_duration": 200}, False),
        ({"min_duration": 40, "max_duration": 60}, True),
        ({"service_name": "web", "min_duration": 40, "max_duration": 60}, False),
        ({"annotation_query": (("error", ""),)}, True),
        ({"annotation_query": (("error", "timeout"),)}, True),
        ({"annotation_query": (("error", "refused"),)}, False),
        ({"annotation_query": (("retry", ""),)}, True),
        ({"annotation_query": (("retry", ""), ("http.method", "GET"))}, True),
        ({"annotation_query": (("retry", ""), ("http.method", "POST"))}, False),
        ({"service_name": "gateway", "annotation_query": (("retry", ""),)}, False),
    ],
)
def test_query_matches_as_zipkins_query_request(fields, selected):
    assert query(**fields).matches(TRACE) is selected


@pytest.mark.parametrize(
    ("timestamp", "inside"),
    [
        (None, False),
        ((NOW_MS - 1000) * 1000, True),
        (NOW_MS * 1000, True),
        (NOW_MS * 1000 + 1, False),
        ((NOW_MS - 60_000) * 1000, True),
        ((NOW_MS - 60_000) * 1000 - 1, False),
    ],
)
def test_window_is_end_ts_minus_lookback_to_end_ts(timestamp, inside):
    assert TraceQuery(end_ts=NOW_MS, lookback=60_000).in_window(timestamp) is inside
