"""OTLP: the span mapping (decoded with opentelemetry-proto), the header and resource lists, joining exporters."""

from __future__ import annotations

import dataclasses
import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ValidationError

from gateway.exporters import FanOutReporter
from gateway.metrics import Metrics
from gateway.otlp import HeaderError, OtlpEncoder, parse_key_values, resource_attributes, split_authority
from gateway.otlp_sender import _retry_after
from gateway.reporter import Reporter
from gateway.routes import Upstream
from gateway.settings import Settings, describe, has_exporter
from gateway.span_payload import PROTOBUF, GzipSpanList, encode_slice
from gateway.spans import W3C_TRACESTATE, Exchange, local_endpoint

UPSTREAM = Upstream("http", "web-svc.emojivoto", 8080)
RESOURCE = {"service.name": "gw", "service.version": "1"}


def exchange(n: int = 1, **changes: object) -> Exchange:
    made = Exchange(
        0x0AF7651916CD43DD8448EB211C80319C + n,
        0x100 + n,
        0x200 + n,
        None,
        False,
        "GET /api",
        "GET",
        "/api/vote",
        "example.com:8080",
        200,
        200,
        None,
        "10.0.0.7",
        50123,
        UPSTREAM,
        1_700_000_000.25,
        0.002,
        1_700_000_000.2505,
        0.001,
        (("team", "web"), (W3C_TRACESTATE, "ot=th:8,a=b")),
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def decoded(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def spans_of(request: ExportTraceServiceRequest) -> list[Span]:
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def attributes(span: Span) -> dict[str, object]:
    return {
        pair.key: pair.value.int_value if pair.value.WhichOneof("value") == "int_value" else pair.value.string_value
        for pair in span.attributes
    }


def test_an_exchange_is_a_server_span_and_its_client_child():
    server, client = spans_of(decoded(OtlpEncoder(RESOURCE).encode([exchange()])))
    assert server.trace_id.hex() == "0af7651916cd43dd8448eb211c80319d"
    assert (server.span_id.hex(), server.parent_span_id) == ("0000000000000101", b"")
    assert (client.span_id.hex(), client.parent_span_id) == ("0000000000000201", server.span_id)
    assert (server.kind, client.kind) == (Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT)
    assert server.name == client.name == "GET /api"
    assert server.trace_state == client.trace_state == "ot=th:8,a=b"
    assert server.start_time_unix_nano == 1_700_000_000_250_000_000
    assert server.end_time_unix_nano - server.start_time_unix_nano == 2_000_000
    assert attributes(server) == {
        "team": "web",
        "http.request.method": "GET",
        "url.path": "/api/vote",
        "server.address": "example.com",
        "server.port": 8080,
        "client.address": "10.0.0.7",
        "client.port": 50123,
        "http.response.status_code": 200,
    }
    assert attributes(client) == {
        "team": "web",
        "http.request.method": "GET",
        "url.path": "/api/vote",
        "server.address": "web-svc.emojivoto",
        "server.port": 8080,
        "http.response.status_code": 200,
    }
    assert server.status == client.status == Status()


def test_a_trusted_parent_is_the_server_spans_parent():
    [server, _] = spans_of(decoded(OtlpEncoder(RESOURCE).encode([exchange(parent_id=0xB7AD6B7169203331)])))
    assert server.parent_span_id.hex() == "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("error", "status", "upstream_status", "server_error", "client_error"),
    [
        (None, 404, 404, None, "HTTP 404"),  # a 4xx is the client's: an error for a CLIENT span only
        (None, 503, 503, "HTTP 503", "HTTP 503"),
        ("upstream timed out", 504, None, "upstream timed out", "upstream timed out"),
        (None, 302, 302, None, None),
    ],
)
def test_status_error_follows_the_http_conventions(error, status, upstream_status, server_error, client_error):
    server, client = spans_of(
        decoded(
            OtlpEncoder(RESOURCE).encode(
                [exchange(error=error, status_code=status, upstream_status_code=upstream_status)]
            )
        )
    )
    for span, message in ((server, server_error), (client, client_error)):
        if message is None:
            assert span.status.code == Status.StatusCode.STATUS_CODE_UNSET
        else:
            assert (span.status.code, span.status.message) == (Status.StatusCode.STATUS_CODE_ERROR, message)
    if upstream_status is None:
        assert "http.response.status_code" not in attributes(client)


def test_slices_join_into_one_request_through_the_gzip_document():
    encoder = OtlpEncoder(RESOURCE)
    document = GzipSpanList(PROTOBUF)
    for piece in ([exchange(1), exchange(2)], [exchange(3)]):
        document.add(encode_slice(piece, encoder))
    payload = document.close()
    request = decoded(gzip.decompress(payload.body))
    assert payload.spans == 6
    assert [span.trace_id[-1] for span in spans_of(request)] == [0x9D, 0x9D, 0x9E, 0x9E, 0x9F, 0x9F]
    assert all(
        {kv.key: kv.value.string_value for kv in rs.resource.attributes} == RESOURCE for rs in request.resource_spans
    )
    assert request.resource_spans[0].scope_spans[0].scope.name == "ingress-gateway"


def test_encoding_never_changes_the_exchange():
    record = exchange()
    copy = dataclasses.replace(record)
    OtlpEncoder(RESOURCE).encode([record])
    assert record == copy


@pytest.mark.parametrize(
    ("value", "pairs"),
    [
        ("", []),
        ("api-key=abc", [("api-key", "abc")]),
        (" a = 1 , b=x%20y%2Cz ,", [("a", "1"), ("b", "x y,z")]),
        ("authorization=Bearer%20t=k", [("authorization", "Bearer t=k")]),
    ],
)
def test_key_values_as_otel_exporter_otlp_headers(value, pairs):
    assert parse_key_values(value) == pairs


@pytest.mark.parametrize("value", ["novalue", "=v", "a b=c", "a=%0d%0aX-Injected: 1"])
def test_bad_key_values_are_refused_without_repeating_the_value(value):
    with pytest.raises(HeaderError) as raised:
        parse_key_values(value)
    assert "%0d" not in str(raised.value) and "Injected" not in str(raised.value)


@given(st.text(max_size=200))
def test_parsing_key_values_raises_only_its_own_errors(value):
    try:
        pairs = parse_key_values(value)
    except (HeaderError, UnicodeDecodeError):
        return
    assert all(key and "=" not in key for key, _ in pairs)


def test_a_bad_otlp_headers_setting_names_the_variable_and_hides_the_value():
    with pytest.raises(ValidationError) as raised:
        Settings(upstream_url="http://u:80", otlp_headers="authorization")
    [line] = [describe(error) for error in raised.value.errors()]
    assert line.startswith("GATEWAY_OTLP_HEADERS: must be key=value")
    assert "authorization" not in line.removeprefix("GATEWAY_OTLP_HEADERS")


def test_has_exporter_with_either_url():
    assert not has_exporter(Settings(upstream_url="http://u:80"))
    assert has_exporter(Settings(upstream_url="http://u:80", otlp_url="http://c:4318/v1/traces"))
    assert has_exporter(Settings(upstream_url="http://u:80", zipkin_url="http://c:9411/api/v2/spans"))


def test_resource_from_the_environment():
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=not-this,deployment.environment.name=prod",
        "POD_NAME": "gw-1",
        "K8S_POD_NAME": "ignored-the-first-wins",
        "POD_UID": "u-1",
        "POD_NAMESPACE": "edge",
        "NODE_NAME": "n1",
    }
    assert resource_attributes("gw", env, host_name="box") == {
        "service.name": "gw",
        "deployment.environment.name": "prod",
        "host.name": "box",
        "k8s.pod.name": "gw-1",
        "k8s.pod.uid": "u-1",
        "k8s.namespace.name": "edge",
        "k8s.node.name": "n1",
        "service.version": resource_attributes("x", {}, host_name="h")["service.version"],
    }
    assert set(resource_attributes("gw", {"OTEL_RESOURCE_ATTRIBUTES": "broken"}, host_name="h")) == {
        "host.name",
        "service.name",
        "service.version",
    }


@pytest.mark.parametrize(
    ("authority", "split"),
    [("h", ("h", None)), ("h:80", ("h", 80)), ("[::1]:8080", ("::1", 8080)), ("[::1]", ("::1", None))],
)
def test_split_authority(authority, split):
    assert split_authority(authority) == split


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("", None), ("3", 3.0), ("soon", None), ("Thu, 01 Jan 1970 00:00:10 GMT", 5.0)],
)
def test_retry_after(value, seconds):
    assert _retry_after(value, now=5.0) == seconds


class NullSender:
    async def send(self, payload: bytes) -> None:
        return None

    async def aclose(self) -> None:
        return None


def reporter(metrics: Metrics, exporter: str, queue: int) -> Reporter:
    return Reporter(
        NullSender(),
        local_endpoint("gw", "127.0.0.1", 8080),
        metrics,
        max_queue_spans=queue,
        batch_spans=10,
        flush_interval=1.0,
        max_attempts=1,
        exporter=exporter,
    )


def test_a_trace_is_sampled_only_when_every_exporter_has_room_and_a_refusal_gives_the_others_room_back():
    metrics = Metrics()
    roomy, tight = reporter(metrics, "zipkin", 100), reporter(metrics, "otlp", 2)
    both = FanOutReporter([roomy, tight])
    assert both.reserve() is True
    assert (roomy.queue_depth(), tight.queue_depth()) == (2, 2)
    assert both.reserve() is False, "the tight exporter is full"
    assert (roomy.queue_depth(), tight.queue_depth()) == (2, 2), "the roomy one's reservation came back"
    both.submit(exchange(), reserved=True)
    assert (roomy.queue_depth(), tight.queue_depth()) == (2, 2)
    assert metrics.registry.get_sample_value("gateway_sampling_suspended", {"exporter": "otlp"}) == 1
    assert metrics.registry.get_sample_value("gateway_sampling_suspended", {"exporter": "zipkin"}) in (None, 0)


@pytest.mark.parametrize("url", ["ftp://collector:4318/v1/traces", "collector:4318", "http:///v1/traces"])
def test_a_bad_otlp_url_names_the_variable(url):
    with pytest.raises(ValidationError) as raised:
        Settings(upstream_url="http://u:80", otlp_url=url)
    [line] = [describe(error) for error in raised.value.errors()]
    assert line == f"GATEWAY_OTLP_URL: must be an http:// or https:// URL with a host (got {url!r})"
