"""The expectations file: which spans make a sampled trace of each endpoint whole."""

from __future__ import annotations

import pytest

from loadtest.expectations import (
    DEFAULT_FILE,
    Expectations,
    ExpectationsError,
    SpanPattern,
    load_expectations,
    missing_spans,
    parse_expectations,
    parse_pattern,
)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("web SERVER", SpanPattern("web", "SERVER")),
        ("Web server", SpanPattern("web", "SERVER")),
        ("web CLIENT -> emoji", SpanPattern("web", "CLIENT", "emoji")),
        ("  web   client->Emoji  ", SpanPattern("web", "CLIENT", "emoji")),
        ("web", SpanPattern("web")),
        ("web -> emoji", SpanPattern("web", None, "emoji")),
        ("gateway SERVER", SpanPattern("edge", "SERVER")),
        ("web CLIENT -> gateway", SpanPattern("web", "CLIENT", "edge")),
        ("emojivoto.web-svc_1 PRODUCER", SpanPattern("emojivoto.web-svc_1", "PRODUCER")),
    ],
)
def test_parse_pattern(text, pattern):
    assert parse_pattern(text, gateway_service="Edge") == pattern


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not SERVICE"),
        ("web SERVER extra", "is not SERVICE"),
        ("web CLIENT ->", "is not SERVICE"),
        ("web SERVR", "the kind must be one of SERVER, CLIENT, PRODUCER, CONSUMER"),
    ],
)
def test_parse_pattern_refuses_what_it_cannot_read(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pattern(text)


def test_describe_writes_a_pattern_as_it_is_read():
    for text in ("web SERVER", "web CLIENT -> emoji", "web", "web -> emoji"):
        assert parse_pattern(text).describe() == text


def test_missing_spans_counts_each_span_once_and_serves_the_most_specific_patterns_first():
    patterns = [parse_pattern(text) for text in ("web CLIENT", "web CLIENT -> emoji", "web CLIENT -> voting")]
    # One call to emoji: it serves "-> emoji", not the bare "web CLIENT" listed first.
    assert missing_spans(patterns, [("web", "CLIENT", "emoji"), ("web", "CLIENT", "voting")]) == ["web CLIENT"]
    assert missing_spans(patterns, [("web", "CLIENT", "emoji")]) == ["web CLIENT", "web CLIENT -> voting"]
    twice = [parse_pattern("emoji SERVER")] * 2
    assert missing_spans(twice, [("emoji", "SERVER", None)]) == ["emoji SERVER"]
    assert missing_spans(twice, [("emoji", "SERVER", None)] * 3) == []


def test_parse_expectations_reads_endpoints_and_default():
    expectations = parse_expectations(
        {
            "gateway_service": "Edge",
            "default": ["gateway SERVER"],
            "endpoints": {"/api/list": ["gateway SERVER", "web SERVER"]},
        }
    )
    assert expectations.gateway_service == "edge"
    assert expectations.spans_for("/api/list") == (SpanPattern("edge", "SERVER"), SpanPattern("web", "SERVER"))
    assert expectations.spans_for("/other") == (SpanPattern("edge", "SERVER"),)
    assert expectations.is_gateway_root("edge", "SERVER")
    assert not expectations.is_gateway_root("edge", "CLIENT")


def test_the_gateway_service_given_on_the_command_line_wins_over_the_files():
    expectations = parse_expectations({"endpoints": {"/x": ["gateway SERVER"]}}, gateway_service="front")
    assert expectations.spans_for("/x") == (SpanPattern("front", "SERVER"),)


def test_without_a_default_an_unlisted_endpoint_needs_the_gateways_two_spans():
    expectations = Expectations(gateway_service="edge")
    assert expectations.spans_for(None) == (SpanPattern("edge", "SERVER"), SpanPattern("edge", "CLIENT"))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a mapping with 'endpoints'"),
        ({"routes": []}, "unknown top-level key 'routes'"),
        ({"gateway_service": ""}, "gateway_service: must be a service name"),
        ({"endpoints": ["/api/list"]}, "endpoints: must map each endpoint"),
        ({"endpoints": {"api/list": ["web"]}}, "endpoints: 'api/list' is not a path"),
        ({"endpoints": {"/api/list": []}}, r"endpoints\./api/list: must be a non-empty list"),
        ({"endpoints": {"/api/list": ["web", 3]}}, r"endpoints\./api/list\[1\]: must be a string"),
        ({"endpoints": {"/api/list": ["web SERVR"]}}, r"endpoints\./api/list\[0\]: 'web SERVR': the kind"),
        ({"default": "gateway SERVER"}, "default: must be a non-empty list"),
    ],
)
def test_parse_expectations_locates_the_first_problem(document, message):
    with pytest.raises(ValueError, match=message):
        parse_expectations(document)


def test_load_expectations_names_the_file(tmp_path):
    path = tmp_path / "expect.yaml"
    with pytest.raises(ExpectationsError, match=f"{path}: cannot read expectations"):
        load_expectations(path)
    path.write_text("endpoints: [")
    with pytest.raises(ExpectationsError, match=f"{path}: invalid YAML"):
        load_expectations(path)
    path.write_text("endpoints:\n  /api/list: [web SERVR]\n")
    with pytest.raises(ExpectationsError, match=rf"{path}: endpoints\./api/list\[0\]"):
        load_expectations(path)


def test_the_bundled_file_describes_the_demo_mesh():
    expectations = load_expectations(DEFAULT_FILE)
    assert expectations.gateway_service == "ingress-gateway"
    grpc_calls = {"/emojivoto.v1.EmojiService/ListAll", "/emojivoto.v1.EmojiService/FindByShortcode"}
    assert set(expectations.endpoints) == {"/api/list", "/api/vote", "/api/leaderboard", *grpc_calls}
    for call in grpc_calls:
        assert [pattern.describe() for pattern in expectations.spans_for(call)] == [
            "ingress-gateway SERVER",
            "ingress-gateway CLIENT",
            "emoji-grpc SERVER",
        ]
    assert [pattern.describe() for pattern in expectations.spans_for("/api/list")] == [
        "ingress-gateway SERVER",
        "ingress-gateway CLIENT",
        "web SERVER",
        "web CLIENT -> emoji",
        "emoji SERVER",
    ]
    assert len(expectations.spans_for("/api/vote")) == len(expectations.spans_for("/api/leaderboard")) == 7
    assert expectations.spans_for("/") == (
        SpanPattern("ingress-gateway", "SERVER"),
        SpanPattern("ingress-gateway", "CLIENT"),
    )
