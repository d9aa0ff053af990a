from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.route_file import RouteFileError, load_routes, parse_routes
from gateway.route_schema import ADAPTIVE_KEYS, ROUTE_KEYS
from gateway.route_table import RouteTable
from gateway.routes import (
    DEFAULT_ADAPTIVE_INTERVAL,
    DEFAULT_MIN_SAMPLE_RATE,
    Adaptive,
    Route,
    Upstream,
    parse_upstream,
    render_span_name,
)
from tests.support import REPO_ROOT

WEB = parse_upstream("http://web-svc.emojivoto:80")


# --- load_routes ------------------------------------------------------------------------------------------------


@pytest.fixture
def route_file(tmp_path: Path):
    def write(text: str | bytes, name: str = "routes.yaml") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return write


def test_load_routes_reads_every_field_and_defaults(route_file):
    path = route_file(
        """
routes:
  - name: emojivoto-api
    host: Emojivoto.Example.com
    path_prefix: /api
    upstream: http://web-svc.emojivoto:80
    sample_rate: 1.0
  - upstream: http://web-svc.emojivoto:80/v1
  - host: "*.example.com"
    path_prefix: /vote
    upstream: https://vote.internal
    sample_rate: 0
"""
    )
    assert load_routes(path) == [
        Route(
            name="emojivoto-api",
            upstream=WEB,
            host="emojivoto.example.com",
            path_prefix="/api",
            sample_rate=1.0,
        ),
        Route(name="/", upstream=Upstream("http", "web-svc.emojivoto", 80, "/v1")),
        Route(
            name="*.example.com/vote",
            upstream=Upstream("https", "vote.internal", 443),
            host="*.example.com",
            path_prefix="/vote",
            sample_rate=0.0,
        ),
    ]


def test_sample_rate_is_a_float_even_when_written_as_an_integer(route_file):
    [loaded] = load_routes(route_file("routes:\n  - upstream: http://web\n    sample_rate: 1\n"))
    assert loaded.sample_rate == 1.0
    assert isinstance(loaded.sample_rate, float)


@pytest.mark.parametrize(
    ("text", "protocol"), [("", "http1"), ("    protocol: http1\n", "http1"), ("    protocol: h2c\n", "h2c")]
)
def test_protocol_defaults_to_http1(route_file, text, protocol):
    [loaded] = load_routes(route_file("routes:\n  - upstream: http://grpc:8080\n" + text))
    assert loaded.protocol == protocol


@pytest.mark.parametrize(
    ("upstream", "protocol", "message"),
    [
        ("http://web", "grpc", "routes[0].protocol: must be one of http1, h2c (got 'grpc')"),
        ("http://web", "2", "routes[0].protocol: must be one of http1, h2c (got 2)"),
        ("https://web", "h2c", "routes[0].protocol: h2c needs an http:// upstream (got https://)"),
    ],
)
def test_protocol_errors_name_the_key(route_file, upstream, protocol, message):
    path = route_file(f"routes:\n  - upstream: {upstream}\n    protocol: {protocol}\n")
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == f"{path}:3: {message}"


EXAMPLE = REPO_ROOT / "config" / "routes.yaml"


def test_the_example_route_file_loads_and_routes_emojivoto():
    table = RouteTable(load_routes(EXAMPLE), default=None)
    vote = table.match("localhost:8080", "/api/vote")
    assert vote is not None
    assert (vote.name, vote.upstream, vote.sample_rate, vote.max_traces_per_second) == ("emojivoto-vote", WEB, 1.0, 50)
    api = table.match("localhost:8080", "/api/leaderboard")
    assert api is not None
    assert api.adaptive is not None
    root = table.match("localhost:8080", "/")
    assert root is not None
    assert (root.name, root.upstream, root.sample_rate) == ("emojivoto-web", WEB, None)


def test_the_example_route_file_documents_every_key():
    comments = "\n".join(line for line in EXAMPLE.read_text().splitlines() if line.startswith("#"))
    for key in (*ROUTE_KEYS, *ADAPTIVE_KEYS):
        assert re.search(rf"^#\s+{key}\b", comments, re.MULTILINE), f"config/routes.yaml does not document {key!r}"


ENTRY = "upstream: http://web"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        pytest.param("", "", "expected a mapping with a 'routes' list at the top level (got nothing)", id="empty-file"),
        pytest.param(
            "# only a comment\n", "", "expected a mapping with a 'routes' list at the top level (got nothing)"
        ),
        pytest.param(
            "- upstream: http://web\n", "", "expected a mapping with a 'routes' list at the top level (got a list)"
        ),
        pytest.param("just text\n", "", "expected a mapping with a 'routes' list at the top level (got a string)"),
        pytest.param("2024-01-01\n", "", "expected a mapping with a 'routes' list at the top level (got a date)"),
        pytest.param("rutes: []\n", "1", "unknown top-level key 'rutes' (allowed: routes)", id="unknown-top-key"),
        pytest.param("version: 1\nroutes: []\n", "1", "unknown top-level key 'version' (allowed: routes)"),
        pytest.param("{}\n", "1", "routes: is required", id="routes-missing"),
        pytest.param("routes:\n", "1", "routes: must be a list of routes (got nothing)", id="routes-null"),
        pytest.param("routes:\n  upstream: http://web\n", "1", "routes: must be a list of routes (got a mapping)"),
        pytest.param("routes: []\n", "1", "routes: must list at least one route", id="routes-empty"),
        pytest.param(
            "routes:\n  - http://web\n", "2", "routes[0]: must be a mapping (got a string)", id="entry-not-mapping"
        ),
        pytest.param("routes:\n  -\n", "2", "routes[0]: must be a mapping (got nothing)", id="entry-null"),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    upstrem: http://web\n",
            "3",
            "routes[0]: unknown key 'upstrem' (allowed: adaptive, host, max_traces_per_second, name, path_prefix,"
            " protocol, sample_rate, span_name, tags, timeout, upstream)",
            id="unknown-key",
        ),
        pytest.param("routes:\n  - host: a.com\n", "2", "routes[0].upstream: is required", id="missing-upstream"),
        pytest.param(
            f"routes:\n  - {ENTRY}\n  - host: a.com\n", "3", "routes[1].upstream: is required", id="second-entry-named"
        ),
        pytest.param(
            "routes:\n  - upstream: 8080\n",
            "2",
            "routes[0].upstream: must be a URL string (got 8080)",
            id="upstream-int",
        ),
        pytest.param(
            "routes:\n  - upstream: ftp://web\n",
            "2",
            "routes[0].upstream: must be an http:// or https:// URL (got 'ftp://web')",
            id="upstream-scheme",
        ),
        pytest.param(
            "routes:\n  - upstream: http://web:99999\n",
            "2",
            "routes[0].upstream: port must be a number within 1-65535 (got 'http://web:99999')",
            id="upstream-port",
        ),
        pytest.param(
            "routes:\n  - upstream: http:///x\n",
            "2",
            "routes[0].upstream: has no host (got 'http:///x')",
            id="upstream-host",
        ),
        pytest.param(
            "routes:\n  - upstream: http://web/?a=1\n",
            "2",
            "routes[0].upstream: must not have a query or fragment (got 'http://web/?a=1')",
            id="upstream-query",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n  - {ENTRY}\n    path_prefix: /a\n  - {ENTRY}\n    path_prefix: /b\n"
            "    sample_rate: 1.5\n",
            "7",
            "routes[2].sample_rate: must be within [0.0, 1.0] (got 1.5)",
            id="rate-above-one",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: -0.1\n",
            "3",
            "routes[0].sample_rate: must be within [0.0, 1.0] (got -0.1)",
            id="rate-negative",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: .nan\n",
            "3",
            "routes[0].sample_rate: must be within [0.0, 1.0] (got nan)",
            id="rate-nan",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: '0.5'\n",
            "3",
            "routes[0].sample_rate: must be a number (got '0.5')",
            id="rate-string",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: true\n",
            "3",
            "routes[0].sample_rate: must be a number (got True)",
            id="rate-bool",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: api\n",
            "3",
            "routes[0].path_prefix: must start with '/' (got 'api')",
            id="prefix-relative",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: ''\n",
            "3",
            "routes[0].path_prefix: must start with '/' (got '')",
            id="prefix-empty",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: /api?x=1\n",
            "3",
            "routes[0].path_prefix: must be a path, without '?' or '#' (got '/api?x=1')",
            id="prefix-query",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: 5\n",
            "3",
            "routes[0].path_prefix: must be a string (got 5)",
            id="prefix-int",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: http://a.com\n",
            "3",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got 'http://a.com')",
            id="host-url",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: a.com:8080\n",
            "3",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got 'a.com:8080')",
            id="host-port",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: '*'\n",
            "3",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got '*')",
            id="host-bare-star",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: a.*.com\n",
            "3",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got 'a.*.com')",
            id="host-inner-star",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: 12\n", "3", "routes[0].host: must be a string (got 12)", id="host-int"
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    name: ''\n",
            "3",
            "routes[0].name: must be a non-empty string (got '')",
            id="name-empty",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    name: [a]\n",
            "3",
            "routes[0].name: must be a non-empty string (got a list)",
            id="name-list",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: a.com\n    path_prefix: /api\n"
            f"  - {ENTRY}\n  - {ENTRY}\n    host: A.com\n    path_prefix: /api/\n",
            "8",
            "routes[2]: same host and path_prefix as routes[0]",
            id="duplicate-host-and-prefix",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n  - {ENTRY}\n",
            "3",
            "routes[1]: same host and path_prefix as routes[0]",
            id="dup-any",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    name: web\n  - {ENTRY}\n    name: web\n    path_prefix: /x\n",
            "5",
            "routes[1].name: 'web' is already used by routes[0]",
            id="duplicate-name",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    span_name: '{{method}} {{route}}'\n",
            "3",
            "routes[0].span_name: unknown placeholder {route} (allowed: {method}, {path}) in '{method} {route}'",
            id="span-name-unknown-placeholder",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    span_name: '{{path!r}}'\n",
            "3",
            "routes[0].span_name: unknown placeholder {path!r} (allowed: {method}, {path}) in '{path!r}'",
            id="span-name-conversion",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    span_name: '{{0}}'\n",
            "3",
            "routes[0].span_name: unknown placeholder {0} (allowed: {method}, {path}) in '{0}'",
            id="span-name-positional",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    span_name: 'GET {{method'\n",
            "3",
            "routes[0].span_name: expected '}' before end of string; write a literal brace as {{ or }}"
            " (got 'GET {method')",
            id="span-name-unclosed",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    span_name: '  '\n",
            "3",
            "routes[0].span_name: must be a non-empty string (got '  ')",
            id="span-name-blank",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    max_traces_per_second: -1\n",
            "3",
            "routes[0].max_traces_per_second: must be 0.0 or more (got -1)",
            id="route-cap-negative",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    max_traces_per_second: .inf\n",
            "3",
            "routes[0].max_traces_per_second: must be a finite number (got inf)",
            id="route-cap-infinite",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    timeout: 0\n",
            "3",
            "routes[0].timeout: must be more than 0 seconds (got 0)",
            id="timeout-zero",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    timeout: 3601\n",
            "3",
            "routes[0].timeout: must be within [0.0, 3600.0] (got 3601)",
            id="timeout-too-long",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    timeout: 5s\n",
            "3",
            "routes[0].timeout: must be a number (got '5s')",
            id="timeout-with-unit",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    adaptive: 5\n",
            "3",
            "routes[0].adaptive: must be a mapping with target_traces_per_second (got a number)",
            id="adaptive-not-mapping",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    adaptive:\n      min_sample_rate: 0.1\n",
            "3",
            "routes[0].adaptive.target_traces_per_second: is required",
            id="adaptive-without-target",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    adaptive:\n      target_traces_per_second: 0\n",
            "4",
            "routes[0].adaptive.target_traces_per_second: must be more than 0 (got 0)",
            id="adaptive-target-zero",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    adaptive:\n      target_traces_per_second: 5\n      min_sample_rate: 2\n",
            "5",
            "routes[0].adaptive.min_sample_rate: must be within [0.0, 1.0] (got 2)",
            id="adaptive-floor-above-one",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    adaptive:\n      target_traces_per_second: 5\n      interval: 0.01\n",
            "5",
            "routes[0].adaptive.interval: must be within [0.1, 3600.0] (got 0.01)",
            id="adaptive-interval-too-short",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    adaptive:\n      target_traces_per_second: 5\n      target: 3\n",
            "5",
            "routes[0].adaptive: unknown key 'target' (allowed: interval, min_sample_rate, target_traces_per_second)",
            id="adaptive-unknown-key",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    tags: [team]\n",
            "3",
            "routes[0].tags: must be a mapping of tag names to values (got a list)",
            id="tags-not-mapping",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    tags:\n      team: web\n      http.path: /x\n",
            "5",
            "routes[0].tags.http.path: is set by the gateway itself"
            " (reserved: error, http.host, http.method, http.path, http.status_code)",
            id="tags-reserved",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    tags:\n      w3c.tracestate: ot=th:0\n",
            "4",
            "routes[0].tags.w3c.tracestate: is set by the gateway itself (the trace's W3C tracestate)",
            id="tags-tracestate",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    tags:\n      team:\n",
            "4",
            "routes[0].tags.team: must be a string, number or boolean (got nothing)",
            id="tags-null-value",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    tags: {{1: one}}\n",
            "3",
            "routes[0].tags: tag names must be non-empty strings (got 1)",
            id="tags-number-name",
        ),
        pytest.param(
            "routes:\n  - upstream: http://web\n   host: a.com\n",
            "3:4",
            "invalid YAML: expected <block end>, but found '<block mapping start>'",
            id="yaml-indentation",
        ),
        pytest.param("routes: [\n", "2:1", "invalid YAML: expected the node content, but found '<stream end>'"),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    upstream: http://other\n",
            "3:5",
            "invalid YAML: found duplicate key 'upstream'",
            id="yaml-duplicate-key",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n---\nroutes: []\n",
            "3:1",
            "invalid YAML: expected a single document in the stream, but found another document",
            id="yaml-two-documents",
        ),
        pytest.param(
            "routes:\n\t- upstream: http://web\n",
            "2:1",
            "invalid YAML: found character '\\t' that cannot start any token",
            id="yaml-tab",
        ),
        pytest.param(
            'routes:\n  - upstream: "http://web\x07"\n',
            "2:26",
            "invalid YAML: special characters are not allowed (#x0007)",
            id="yaml-control-character",
        ),
    ],
)
def test_route_file_errors_name_the_file_line_and_entry(route_file, text, where, message):
    path = route_file(text)
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == (f"{path}:{where}: {message}" if where else f"{path}: {message}")
    assert "\n" not in str(caught.value)


def test_missing_route_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == f"{path}: cannot read route file: No such file or directory"


def test_route_file_that_is_a_directory(tmp_path):
    with pytest.raises(RouteFileError) as caught:
        load_routes(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read route file: Is a directory"


def test_route_file_that_is_not_utf8(route_file):
    text = b"routes:\n  - upstream: http://caf\xe9\n"
    path = route_file(text)
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte {text.index(0xE9)})"


def test_route_file_error_is_a_value_error(route_file):
    # So that a pydantic validator which loads the file reports it as a validation error.
    with pytest.raises(ValueError, match="routes: must list at least one route"):
        load_routes(route_file("routes: []\n"))


def test_yaml_merge_keys_may_override_merged_values(route_file):
    path = route_file(
        """
base: &base {upstream: "http://web", sample_rate: 0.1}
routes: []
"""
    )
    with pytest.raises(RouteFileError, match="unknown top-level key 'base'"):
        load_routes(path)
    path = route_file(
        """
routes:
  - &web {upstream: "http://web", sample_rate: 0.1}
  - <<: *web
    path_prefix: /vote
    sample_rate: 1.0
"""
    )
    assert [loaded.sample_rate for loaded in load_routes(path)] == [0.1, 1.0]


def test_load_routes_reads_the_policy_keys(route_file):
    path = route_file(
        """
routes:
  - name: votes
    path_prefix: /api/vote
    upstream: http://web-svc.emojivoto:80
    span_name: "vote {method} {path} {{literal}}"
    sample_rate: 0.2
    adaptive:
      target_traces_per_second: 5
      min_sample_rate: 0.01
      interval: 30
    max_traces_per_second: 50
    timeout: 2.5
    tags:
      team: voting
      tier: 1
      canary: false
  - name: defaults
    upstream: http://web-svc.emojivoto:80
    adaptive: {target_traces_per_second: 0.5}
"""
    )
    votes, defaults = load_routes(path)
    assert votes == Route(
        name="votes",
        upstream=WEB,
        path_prefix="/api/vote",
        span_name="vote {method} {path} {{literal}}",
        sample_rate=0.2,
        adaptive=Adaptive(target_traces_per_second=5.0, min_sample_rate=0.01, interval=30.0),
        max_traces_per_second=50.0,
        timeout=2.5,
        tags=(("team", "voting"), ("tier", "1"), ("canary", "false")),
    )
    assert render_span_name(votes.span_name or "", "GET", "/api/vote") == "vote GET /api/vote {literal}"
    assert defaults.adaptive == Adaptive(0.5, DEFAULT_MIN_SAMPLE_RATE, DEFAULT_ADAPTIVE_INTERVAL)
    assert (defaults.max_traces_per_second, defaults.timeout, defaults.tags, defaults.span_name) == (
        0.0,
        None,
        (),
        None,
    )


def test_errors_name_the_line_of_the_key_through_anchors_and_merges(route_file):
    path = route_file(
        """routes:
  - &base
    upstream: http://web
    timeout: 5
  - <<: *base
    path_prefix: /x
    sample_rate: 7
"""
    )
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == f"{path}:7: routes[1].sample_rate: must be within [0.0, 1.0] (got 7)"


def test_parse_routes_names_the_source_it_is_given():
    with pytest.raises(RouteFileError) as caught:
        parse_routes("routes:\n  - upstream: http://web\n    timeout: -1\n", "<config map>")
    assert str(caught.value) == "<config map>:3: routes[0].timeout: must be within [0.0, 3600.0] (got -1)"


def test_a_file_nested_too_deeply_is_an_error_not_a_crash(route_file):
    path = route_file("routes: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == f"{path}: invalid YAML: nested too deeply"
