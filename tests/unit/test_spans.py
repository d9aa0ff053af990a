from __future__ import annotations

import dataclasses
import json
import socket
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from py_zipkin import Kind
from py_zipkin.encoding import Endpoint, Span

from gateway.context import MAX_64BIT, MAX_128BIT
from gateway.routes import parse_upstream
from gateway.spans import Exchange, local_endpoint
from gateway.zipkin_json import ZipkinJsonEncoder, encode_spans
from tests.support import REPO_ROOT

SHARED_SPEC = REPO_ROOT.parent / "shared" / "specs" / "zipkin2-api.yaml"
FIXTURE_SPEC = REPO_ROOT / "tests" / "fixtures" / "zipkin2-api.yaml"

LOCAL = local_endpoint("ingress-gateway", "10.0.0.5", 8080)
LOCAL_JSON = {"serviceName": "ingress-gateway", "ipv4": "10.0.0.5", "port": 8080}
TRACE_ID = 0x463AC35C9F6413AD48485A3953BB6124
SERVER_ID = 0xA2FB4A1D1A96D312
CLIENT_ID = 0x0020000000000001


def make_exchange(**overrides: Any) -> Exchange:
    fields: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "server_span_id": SERVER_ID,
        "client_span_id": CLIENT_ID,
        "parent_id": None,
        "debug": False,
        "name": "GET emojivoto-api",
        "method": "GET",
        "path": "/api/list",
        "host": "emojivoto.example.com",
        "status_code": 200,
        "upstream_status_code": 200,
        "error": None,
        "client_host": "203.0.113.7",
        "client_port": 4000,
        "upstream": parse_upstream("http://web-svc.emojivoto:80"),
        # Binary fractions, so that the microseconds below are exact.
        "server_start": 1_700_000_000.25,
        "server_duration": 0.015625,
        "client_start": 1_700_000_000.25 + 0.0009765625,
        "client_duration": 0.0078125,
    }
    fields.update(overrides)
    return Exchange(**fields)


def encoded(*spans: Span) -> list[dict[str, Any]]:
    payload = encode_spans(spans)
    assert isinstance(payload, bytes)
    decoded = json.loads(payload)
    validator("ListOfSpans").validate(decoded)
    return decoded  # type: ignore[no-any-return]


def encoded_spans(exchange: Exchange) -> list[dict[str, Any]]:
    """The reporter's path, the Zipkin seam (``ZipkinJsonEncoder.encode``), checked against the spec's schema."""
    decoded = json.loads(ZipkinJsonEncoder(LOCAL).encode([exchange]))
    validator("ListOfSpans").validate(decoded)
    return decoded  # type: ignore[no-any-return]


def encoded_exchange(**overrides: Any) -> list[dict[str, Any]]:
    return encoded_spans(make_exchange(**overrides))


# --- the spec --------------------------------------------------------------------------------------------------


def spec_path() -> Path:
    """The shared spec beside the repository, else the copy kept for a clone without it."""
    return SHARED_SPEC if SHARED_SPEC.exists() else FIXTURE_SPEC


@cache
def validator(definition: str) -> jsonschema.Draft4Validator:
    # Swagger 2.0 definitions are draft-4 schemas that refer to each other as '#/definitions/<Name>'; kept under
    # the same key beside a root $ref, those references resolve as they are.
    spec = yaml.safe_load(spec_path().read_text(encoding="utf-8"))
    schema = {"definitions": spec["definitions"], "$ref": f"#/definitions/{definition}"}
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="../shared is not beside the repository")
def test_fixture_spec_is_a_copy_of_the_shared_spec():
    assert FIXTURE_SPEC.read_bytes() == SHARED_SPEC.read_bytes()


@pytest.mark.parametrize(
    "span",
    [
        pytest.param({"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "duration": 0}, id="zero-duration"),
        pytest.param({"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d31"}, id="short-id"),
        pytest.param({"traceId": "463ac35c9f6413ad"}, id="no-id"),
        pytest.param({"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "debug": "true"}, id="debug-string"),
        pytest.param({"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "kind": "LOCAL"}, id="bad-kind"),
        pytest.param(
            {"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "localEndpoint": {"ipv4": "web-svc"}},
            id="ipv4-format",
        ),
        pytest.param(
            {"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "tags": {"http.status_code": 200}},
            id="tag-not-string",
        ),
    ],
)
def test_the_schema_used_here_rejects_invalid_spans(span):
    with pytest.raises(jsonschema.ValidationError):
        validator("Span").validate(span)
    with pytest.raises(jsonschema.ValidationError):
        validator("ListOfSpans").validate([span])


def test_the_schema_accepts_the_specs_own_example():
    spec = yaml.safe_load(spec_path().read_text(encoding="utf-8"))
    validator("Span").validate(spec["definitions"]["Span"]["example"])


# --- an exchange's spans --------------------------------------------------------------------------------------------


def test_a_root_exchange_becomes_a_server_span_and_its_client_child():
    assert encoded_exchange() == [
        {
            "traceId": "463ac35c9f6413ad48485a3953bb6124",
            "id": "a2fb4a1d1a96d312",
            "name": "GET emojivoto-api",
            "timestamp": 1700000000250000,
            "duration": 15625,
            "kind": "SERVER",
            "localEndpoint": LOCAL_JSON,
            "remoteEndpoint": {"ipv4": "203.0.113.7", "port": 4000},
            "tags": {
                "http.method": "GET",
                "http.path": "/api/list",
                "http.host": "emojivoto.example.com",
                "http.status_code": "200",
            },
        },
        {
            "traceId": "463ac35c9f6413ad48485a3953bb6124",
            "id": "0020000000000001",
            "parentId": "a2fb4a1d1a96d312",
            "name": "GET emojivoto-api",
            "timestamp": 1700000000250976,
            "duration": 7812,
            "kind": "CLIENT",
            "localEndpoint": LOCAL_JSON,
            "remoteEndpoint": {"serviceName": "web-svc.emojivoto", "port": 80},
            "tags": {
                "http.method": "GET",
                "http.path": "/api/list",
                "http.host": "emojivoto.example.com",
                "http.status_code": "200",
            },
        },
    ]


def test_an_exchange_that_joined_a_trusted_trace_has_the_incoming_span_as_parent():
    server, client = encoded_exchange(trace_id=0x48485A3953BB6124, parent_id=0x0000000000000BEE, debug=True)
    assert server == {
        "debug": True,
        "traceId": "48485a3953bb6124",
        "id": "a2fb4a1d1a96d312",
        "parentId": "0000000000000bee",
        "name": "GET emojivoto-api",
        "timestamp": 1700000000250000,
        "duration": 15625,
        "kind": "SERVER",
        "localEndpoint": LOCAL_JSON,
        "remoteEndpoint": {"ipv4": "203.0.113.7", "port": 4000},
        "tags": {
            "http.method": "GET",
            "http.path": "/api/list",
            "http.host": "emojivoto.example.com",
            "http.status_code": "200",
        },
    }
    assert (client["traceId"], client["parentId"], client["debug"]) == ("48485a3953bb6124", "a2fb4a1d1a96d312", True)


@pytest.mark.parametrize(
    ("trace_id", "hex_id"),
    [
        (1, "0000000000000001"),
        (MAX_64BIT, "ffffffffffffffff"),
        (MAX_64BIT + 1, "00000000000000010000000000000000"),
        (0x0000000000000001FFFFFFFFFFFFFFFF, "0000000000000001ffffffffffffffff"),
        (MAX_128BIT, "ffffffffffffffffffffffffffffffff"),
    ],
)
def test_trace_id_is_16_hex_up_to_64_bits_else_32(trace_id, hex_id):
    server, client = encoded_exchange(trace_id=trace_id)
    assert server["traceId"] == client["traceId"] == hex_id


def test_span_ids_are_16_hex_zero_padded():
    server, client = encoded_exchange(server_span_id=1, client_span_id=MAX_64BIT, parent_id=0xABC)
    assert (server["id"], server["parentId"]) == ("0000000000000001", "0000000000000abc")
    assert (client["id"], client["parentId"]) == ("ffffffffffffffff", "0000000000000001")


@pytest.mark.parametrize(
    ("status_code", "error", "tags"),
    [
        pytest.param(200, None, {"http.status_code": "200"}, id="ok"),
        pytest.param(101, None, {"http.status_code": "101"}, id="1xx-is-no-error"),
        pytest.param(304, None, {"http.status_code": "304"}, id="3xx-is-no-error"),
        pytest.param(404, None, {"http.status_code": "404", "error": "404"}, id="4xx-as-brave"),
        pytest.param(503, None, {"http.status_code": "503", "error": "503"}, id="5xx"),
        pytest.param(
            504, "upstream timed out", {"http.status_code": "504", "error": "upstream timed out"}, id="message-wins"
        ),
        pytest.param(None, "client disconnected", {"error": "client disconnected"}, id="no-response"),
        pytest.param(200, "", {"http.status_code": "200"}, id="empty-message-is-none"),
        pytest.param(None, None, {}, id="nothing-known"),
    ],
)
def test_status_and_error_tags_follow_brave(status_code, error, tags):
    expected = {"http.method": "GET", "http.path": "/api/list", "http.host": "emojivoto.example.com", **tags}
    server, client = encoded_exchange(status_code=status_code, upstream_status_code=status_code, error=error)
    assert server["tags"] == client["tags"] == expected


def test_the_client_span_has_no_status_when_the_upstream_did_not_answer():
    server, client = encoded_exchange(status_code=504, upstream_status_code=None, error="upstream timed out")
    assert (server["tags"]["http.status_code"], server["tags"]["error"]) == ("504", "upstream timed out")
    assert "http.status_code" not in client["tags"]
    assert client["tags"]["error"] == "upstream timed out"


def test_the_client_span_keeps_the_upstream_status_when_the_client_left_mid_response():
    server, client = encoded_exchange(status_code=200, upstream_status_code=200, error="client disconnected")
    assert server["tags"]["http.status_code"] == client["tags"]["http.status_code"] == "200"
    assert server["tags"]["error"] == client["tags"]["error"] == "client disconnected"


def test_route_tags_are_on_both_spans_and_the_http_tags_win_a_clash():
    server, client = encoded_exchange(tags=(("team", "emoji"), ("http.path", "/forged")))
    for span in (server, client):
        assert span["tags"]["team"] == "emoji"
        assert span["tags"]["http.path"] == "/api/list"


def test_a_request_without_host_has_no_host_tag():
    server, client = encoded_exchange(host="")
    assert "http.host" not in server["tags"]
    assert "http.host" not in client["tags"]


@pytest.mark.parametrize(
    ("client_host", "client_port", "remote"),
    [
        ("203.0.113.7", 4000, {"ipv4": "203.0.113.7", "port": 4000}),
        ("2001:db8::7", 4000, {"ipv6": "2001:db8::7", "port": 4000}),
        ("2001:DB8:0:0::7", 4000, {"ipv6": "2001:db8::7", "port": 4000}),
        ("::ffff:203.0.113.7", 4000, {"ipv4": "203.0.113.7", "port": 4000}),
        ("testclient", 50000, {"port": 50000}),
        ("203.0.113.7", None, {"ipv4": "203.0.113.7"}),
        ("/run/gateway.sock", None, None),
        (None, None, None),
    ],
)
def test_server_span_remote_endpoint_is_the_client(client_host, client_port, remote):
    server, _ = encoded_exchange(client_host=client_host, client_port=client_port)
    assert server.get("remoteEndpoint") == remote


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("http://web-svc.emojivoto:80", {"serviceName": "web-svc.emojivoto", "port": 80}),
        ("https://Voting.Internal/v1", {"serviceName": "voting.internal", "port": 443}),
        ("http://10.1.2.3:8080", {"ipv4": "10.1.2.3", "port": 8080}),
        ("http://[2001:db8::5]:8080", {"ipv6": "2001:db8::5", "port": 8080}),
    ],
)
def test_client_span_remote_endpoint_is_the_upstream(url, remote):
    _, client = encoded_exchange(upstream=parse_upstream(url))
    assert client["remoteEndpoint"] == remote


# --- local_endpoint --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_name", "host", "port", "endpoint"),
    [
        ("ingress-gateway", "10.0.0.5", 8080, Endpoint("ingress-gateway", "10.0.0.5", None, 8080)),
        ("ingress-gateway", "0.0.0.0", 8080, Endpoint("ingress-gateway", None, None, 8080)),
        ("ingress-gateway", "::", 8080, Endpoint("ingress-gateway", None, None, 8080)),
        ("ingress-gateway", "::1", 8080, Endpoint("ingress-gateway", None, "::1", 8080)),
        ("ingress-gateway", "fe80::1%eth0", 8080, Endpoint("ingress-gateway", None, "fe80::1", 8080)),
        ("ingress-gateway", "::ffff:10.0.0.5", 8080, Endpoint("ingress-gateway", "10.0.0.5", None, 8080)),
        ("ingress-gateway", "gateway.example", 8080, Endpoint("ingress-gateway", None, None, 8080)),
        ("ingress-gateway", "", 8080, Endpoint("ingress-gateway", None, None, 8080)),
        ("Ingress-Gateway", "127.0.0.1", 80, Endpoint("ingress-gateway", "127.0.0.1", None, 80)),
        ("", "127.0.0.1", 0, Endpoint(None, "127.0.0.1", None, None)),
    ],
)
def test_local_endpoint(service_name, host, port, endpoint):
    assert local_endpoint(service_name, host, port) == endpoint


def test_local_endpoint_never_looks_a_name_up(monkeypatch):
    def no_dns(*args: object) -> None:
        raise AssertionError("DNS lookup")

    for name in ("gethostbyname", "gethostname", "getaddrinfo", "gethostbyname_ex"):
        monkeypatch.setattr(socket, name, no_dns)
    assert local_endpoint("ingress-gateway", "never-resolved.invalid", 8080).ipv4 is None


# --- encode_spans -----------------------------------------------------------------------------------------------


def span(**overrides: Any) -> Span:
    fields: dict[str, Any] = {
        "trace_id": "463ac35c9f6413ad",
        "name": "GET /",
        "parent_id": None,
        "span_id": "a2fb4a1d1a96d312",
        "kind": Kind.SERVER,
        "timestamp": 1_700_000_000.5,
        "duration": 0.25,
    }
    fields.update(overrides)
    return Span(**fields)


@pytest.mark.parametrize(
    ("seconds", "microseconds"),
    [
        pytest.param(0.0, 1, id="zero"),
        pytest.param(1e-9, 1, id="one-nanosecond"),
        pytest.param(0.9e-6, 1, id="sub-microsecond"),
        pytest.param(-0.001, 1, id="negative"),
        pytest.param(1e-6, 1, id="one-microsecond"),
        pytest.param(2.5e-6, 2, id="whole-microseconds"),
        pytest.param(0.015625, 15625, id="milliseconds"),
        pytest.param(3.0, 3_000_000, id="seconds"),
    ],
)
def test_duration_is_whole_microseconds_and_at_least_one(seconds, microseconds):
    [encoded_span] = encoded(span(duration=seconds))
    assert encoded_span["duration"] == microseconds


def test_unknown_duration_stays_absent():
    [encoded_span] = encoded(span(duration=None))
    assert "duration" not in encoded_span


def test_clamping_leaves_the_span_itself_alone():
    tiny = span(duration=1e-9)
    encode_spans([tiny])
    assert tiny.duration == 1e-9


def test_timestamp_is_integer_epoch_microseconds():
    [encoded_span] = encoded(span(timestamp=1_700_000_000.1234567))
    assert isinstance(encoded_span["timestamp"], int)
    assert abs(encoded_span["timestamp"] - 1_700_000_000_123_456) <= 1


@pytest.mark.parametrize(("debug", "written"), [(True, {"debug": True}), (False, {})])
def test_debug_is_written_only_when_set(debug, written):
    assert encoded(span(debug=debug)) == [
        {
            **written,
            "traceId": "463ac35c9f6413ad",
            "id": "a2fb4a1d1a96d312",
            "name": "GET /",
            "timestamp": 1700000000500000,
            "duration": 250000,
            "kind": "SERVER",
        }
    ]


def test_a_batch_is_one_json_list_in_order():
    spans = [span(span_id=f"{n:016x}", debug=n % 2 == 0) for n in range(1, 6)]
    assert [item["id"] for item in encoded(*spans)] == [f"{n:016x}" for n in range(1, 6)]


def test_an_empty_batch_is_an_empty_list():
    assert encode_spans([]) == b"[]"


def test_non_ascii_names_and_tags_are_valid_utf8_json():
    exchange = make_exchange(name="GET /café", path="/café", host="xn--caf-dma.example")
    payload = ZipkinJsonEncoder(LOCAL).encode([exchange])
    assert json.loads(payload.decode("utf-8"))[0]["tags"]["http.path"] == "/café"


_IDS = st.integers(min_value=1, max_value=MAX_64BIT)
_SECONDS = st.floats(min_value=0.0, max_value=120.0, allow_nan=False)


@given(
    trace_id=st.integers(min_value=1, max_value=MAX_128BIT),
    ids=st.tuples(_IDS, _IDS),
    parent_id=st.one_of(st.none(), _IDS),
    debug=st.booleans(),
    status_code=st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    durations=st.tuples(_SECONDS, _SECONDS),
    client=st.sampled_from([("203.0.113.7", 4000), ("2001:db8::7", 1), ("testclient", None), (None, None)]),
)
def test_every_exchange_encodes_to_spans_the_spec_accepts(
    trace_id, ids, parent_id, debug, status_code, durations, client
):
    exchange = dataclasses.replace(
        make_exchange(),
        trace_id=trace_id,
        server_span_id=ids[0],
        client_span_id=ids[1],
        parent_id=parent_id,
        debug=debug,
        status_code=status_code,
        upstream_status_code=status_code,
        server_duration=durations[0],
        client_duration=durations[1],
        client_host=client[0],
        client_port=client[1],
    )
    server, client_span = encoded_spans(exchange)
    assert int(server["traceId"], 16) == int(client_span["traceId"], 16) == trace_id
    assert (int(server["id"], 16), int(client_span["id"], 16)) == ids
    assert client_span["parentId"] == server["id"]
    assert server.get("parentId") == (None if parent_id is None else f"{parent_id:016x}")
    assert server["duration"] >= 1 and client_span["duration"] >= 1
    assert server.get("debug", False) is client_span.get("debug", False) is debug
