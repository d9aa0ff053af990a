from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.route_file import RouteFileError, load_routes, parse_routes
from gateway.route_schema import ADAPTIVE_KEYS, ROUTE_KEYS
from gateway.route_table import RouteTable
from gateway.routes import (
    DEFAULT_ADAPTIVE_INTERVAL,
    DEFAULT_MIN_SAMPLE_RATE,
    RESERVED_TAGS,
    Adaptive,
    Route,
    Upstream,
    parse_upstream,
    render_span_name,
)
from gateway.spans import ERROR, HTTP_HOST, HTTP_METHOD, HTTP_PATH, HTTP_STATUS_CODE
from tests.support import REPO_ROOT

WEB = parse_upstream("http://web-svc.emojivoto:80")


def route(name: str, host: str | None = None, path_prefix: str = "/") -> Route:
    return Route(name=name, upstream=WEB, host=host, path_prefix=path_prefix)


# --- Upstream ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "base_path", "authority"),
    [
        ("http://web-svc.emojivoto:80", "http", "web-svc.emojivoto", 80, "", b"web-svc.emojivoto"),
        ("http://web-svc.emojivoto", "http", "web-svc.emojivoto", 80, "", b"web-svc.emojivoto"),
        ("http://web-svc.emojivoto:8080", "http", "web-svc.emojivoto", 8080, "", b"web-svc.emojivoto:8080"),
        ("https://api.internal", "https", "api.internal", 443, "", b"api.internal"),
        ("https://api.internal:443/", "https", "api.internal", 443, "", b"api.internal"),
        ("https://api.internal:80", "https", "api.internal", 80, "", b"api.internal:80"),
        ("http://API.Internal/v1", "http", "api.internal", 80, "/v1", b"api.internal"),
        ("http://api.internal/v1/", "http", "api.internal", 80, "/v1", b"api.internal"),
        ("HTTP://api.internal/a/b", "http", "api.internal", 80, "/a/b", b"api.internal"),
        ("http://127.0.0.1:9000", "http", "127.0.0.1", 9000, "", b"127.0.0.1:9000"),
        ("http://[::1]:9000", "http", "::1", 9000, "", b"[::1]:9000"),
        ("http://[2001:DB8::1]", "http", "2001:db8::1", 80, "", b"[2001:db8::1]"),
        ("http://web:", "http", "web", 80, "", b"web"),
        ("http://under_score.local", "http", "under_score.local", 80, "", b"under_score.local"),
    ],
)
def test_parse_upstream(url, scheme, host, port, base_path, authority):
    upstream = parse_upstream(url)
    assert upstream == Upstream(scheme, host, port, base_path)
    assert upstream.authority == authority


@pytest.mark.parametrize(
    ("url", "path", "query", "expected"),
    [
        ("http://web-svc.emojivoto:80", "/api/list", b"", "http://web-svc.emojivoto/api/list"),
        ("http://web-svc.emojivoto:80", "/api/vote", b"choice=:joy:", "http://web-svc.emojivoto/api/vote?choice=:joy:"),
        ("http://web:8080/v1", "/", b"", "http://web:8080/v1/"),
        ("http://web:8080/v1/", "/users/7", b"a=1&b=2", "http://web:8080/v1/users/7?a=1&b=2"),
        ("https://[::1]:8443", "/x", b"q=%20", "https://[::1]:8443/x?q=%20"),
    ],
)
def test_url_for_joins_base_path_request_path_and_query(url, path, query, expected):
    assert parse_upstream(url).url_for(path, query) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files", "must be an http:// or https:// URL (got 'ftp://files')"),
        ("web-svc.emojivoto:80", "must be an http:// or https:// URL (got 'web-svc.emojivoto:80')"),
        ("web-svc", "must be an http:// or https:// URL (got 'web-svc')"),
        ("", "must be an http:// or https:// URL (got '')"),
        ("http://", "has no host (got 'http://')"),
        ("http:///api", "has no host (got 'http:///api')"),
        ("http://:80", "has no host (got 'http://:80')"),
        ("http://web:0", "port must be a number within 1-65535 (got 'http://web:0')"),
        ("http://web:65536", "port must be a number within 1-65535 (got 'http://web:65536')"),
        ("http://web:http", "port must be a number within 1-65535 (got 'http://web:http')"),
        ("http://web:-1", "port must be a number within 1-65535 (got 'http://web:-1')"),
        ("http://web/?a=1", "must not have a query or fragment (got 'http://web/?a=1')"),
        ("http://web/?", "must not have a query or fragment (got 'http://web/?')"),
        ("http://web/#top", "must not have a query or fragment (got 'http://web/#top')"),
        ("http://we b/", "has an invalid host name (got 'http://we b/')"),
        ("http://*.web/", "has an invalid host name (got 'http://*.web/')"),
        ("http://-web/", "has an invalid host name (got 'http://-web/')"),
        ("http://web./", "has an invalid host name (got 'http://web./')"),
        (
            "http://bücher.example/",
            "host must be ASCII; write an internationalised name in its xn-- form (got 'http://bücher.example/')",
        ),
        ("http://[zz]/", "is not a valid URL: 'zz' does not appear to be an IPv4 or IPv6 address"),
        ("http://user:s3cret@web/", "must not carry credentials (user:password@)"),
        ("http://user:s3cret@web:99999/", "must not carry credentials (user:password@)"),
    ],
)
def test_parse_upstream_rejects_with_a_clear_message(url, message):
    with pytest.raises(ValueError) as caught:
        parse_upstream(url)
    assert str(caught.value) == message
    assert "s3cret" not in str(caught.value)


def test_upstreams_are_values():
    assert parse_upstream("http://web:80/v1") == parse_upstream("http://WEB/v1/")
    assert hash(parse_upstream("http://web:80/v1")) == hash(parse_upstream("http://WEB/v1/"))
    assert parse_upstream("http://web") != parse_upstream("https://web")


# --- RouteTable -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        # The examples of Kubernetes' Ingress documentation for `pathType: Prefix`.
        ("/", "/", True),
        ("/", "/anything/at/all", True),
        ("/", "*", True),
        ("/foo", "/foo", True),
        ("/foo", "/foo/", True),
        ("/foo/", "/foo", True),
        ("/foo/", "/foo/", True),
        ("/aaa/bb", "/aaa/bbb", False),
        ("/aaa/bbb", "/aaa/bbb", True),
        ("/aaa/bbb/", "/aaa/bbb", True),
        ("/aaa/bbb", "/aaa/bbb/", True),
        ("/aaa/bbb", "/aaa/bbb/ccc", True),
        ("/aaa/bbb", "/aaa/bbbxyz", False),
        ("/api", "/apix", False),
        ("/api", "/ap", False),
        ("/api", "/API", False),
        ("/api", "/v1/api", False),
    ],
)
def test_path_prefix_matches_by_segment(prefix, path, matches):
    table = RouteTable([route("r", path_prefix=prefix)], default=None)
    assert (table.match("a.com", path) is not None) is matches


def test_longest_prefix_wins_whatever_the_file_order():
    routes = [route("root", path_prefix="/"), route("api", path_prefix="/api"), route("vote", path_prefix="/api/vote")]
    table = RouteTable(routes, default=None)
    assert table.match("a.com", "/api/vote").name == "vote"  # type: ignore[union-attr]
    assert table.match("a.com", "/api/vote/1").name == "vote"  # type: ignore[union-attr]
    assert table.match("a.com", "/api/list").name == "api"  # type: ignore[union-attr]
    assert table.match("a.com", "/api/voter").name == "api"  # type: ignore[union-attr]
    assert table.match("a.com", "/index.html").name == "root"  # type: ignore[union-attr]


def test_equal_prefixes_keep_file_order():
    table = RouteTable([route("first", path_prefix="/api"), route("second", path_prefix="/api/")], default=None)
    assert table.match("a.com", "/api/x").name == "first"  # type: ignore[union-attr]


PRECEDENCE = RouteTable(
    [
        route("any-root"),
        route("any-api", path_prefix="/api"),
        route("wild-root", host="*.example.com"),
        route("wild-deep", host="*.b.example.com", path_prefix="/deep"),
        route("exact-api", host="shop.example.com", path_prefix="/api"),
        route("exact-other", host="other.example.com"),
        route("upper", host="UPPER.example.org"),
    ],
    default=route("default"),
)


@pytest.mark.parametrize(
    ("host", "path", "name"),
    [
        pytest.param("shop.example.com", "/api/list", "exact-api", id="exact-host-first"),
        pytest.param("shop.example.com", "/", "wild-root", id="exact-miss-falls-to-wildcard"),
        pytest.param("other.example.com", "/api/x", "exact-other", id="exact-host-over-longer-prefix"),
        pytest.param("x.example.com", "/api/x", "wild-root", id="wildcard-over-any-host"),
        pytest.param("a.b.example.com", "/api", "wild-root", id="wildcard-several-labels"),
        pytest.param("x.b.example.com", "/deep/1", "wild-deep", id="more-specific-wildcard-first"),
        pytest.param("x.b.example.com", "/", "wild-root", id="specific-wildcard-miss-falls-to-broader"),
        pytest.param("example.com", "/", "any-root", id="wildcard-not-apex"),
        pytest.param("example.com", "/api/x", "any-api", id="any-host-longest-prefix"),
        pytest.param("elsewhere.org", "/", "any-root", id="unknown-host-any"),
        pytest.param("SHOP.Example.COM", "/api", "exact-api", id="host-case-insensitive"),
        pytest.param("upper.example.org", "/", "upper", id="route-host-case-insensitive"),
        pytest.param("shop.example.com:8080", "/api", "exact-api", id="port-ignored"),
        pytest.param("shop.example.com.", "/api", "exact-api", id="absolute-name-trailing-dot"),
        pytest.param("X.EXAMPLE.COM:443", "/", "wild-root", id="wildcard-case-and-port"),
        pytest.param("notexample.com", "/", "any-root", id="wildcard-needs-dot-boundary"),
        pytest.param(".example.com", "/", "any-root", id="wildcard-needs-a-label"),
        pytest.param("", "/", "any-root", id="no-host"),
    ],
)
def test_precedence_exact_then_wildcard_then_any_host_then_longest_prefix(host, path, name):
    matched = PRECEDENCE.match(host, path)
    assert matched is not None
    assert matched.name == name


def test_no_match_gives_the_default_route():
    default = route("default")
    table = RouteTable([route("api", host="a.com", path_prefix="/api")], default=default)
    assert table.match("a.com", "/other") is default
    assert table.match("b.com", "/api") is default


def test_no_match_and_no_default_gives_none():
    table = RouteTable([route("api", host="a.com", path_prefix="/api")], default=None)
    assert table.match("a.com", "/other") is None
    assert table.match("", "/api") is None


def test_empty_table_serves_the_default_for_everything():
    default = route("default")
    assert RouteTable([], default=default).match("any.host", "/x") is default


def test_ipv6_host_with_port():
    table = RouteTable([route("v6", host="[::1]"), route("any")], default=None)
    assert table.match("[::1]:8080", "/").name == "v6"  # type: ignore[union-attr]
    assert table.match("[::1]", "/").name == "v6"  # type: ignore[union-attr]
    assert table.match("[::2]:8080", "/").name == "any"  # type: ignore[union-attr]


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


# --- matching, against a reference written from the rules ------------------------------------------------------------

LABELS = st.sampled_from(["a", "b", "c"])
DNS_NAMES = st.lists(LABELS, min_size=1, max_size=3).map(".".join)
ROUTE_HOSTS = st.one_of(st.none(), DNS_NAMES, DNS_NAMES.map(lambda name: f"*.{name}"))
SEGMENTS = st.lists(st.sampled_from(["a", "b", "ab"]), max_size=3).map(lambda parts: "/" + "/".join(parts))
PREFIXES = st.tuples(SEGMENTS, st.booleans()).map(lambda pair: pair[0] + ("/" if pair[1] and pair[0] != "/" else ""))
REQUEST_HOSTS = st.tuples(DNS_NAMES, st.booleans(), st.sampled_from(["", ":8080", "."])).map(
    lambda parts: (parts[0].upper() if parts[1] else parts[0]) + parts[2]
)


def reference_match(routes: list[Route], host: str, path: str) -> Route | None:
    """The rules, as the README states them: exact host, then the most specific wildcard, then any host; among the
    routes of a host, the longest path prefix (by whole segments), then file order."""
    name = host.partition(":")[0].rstrip(".").lower()

    def host_rank(route_host: str | None) -> tuple[int, int] | None:
        if route_host is None:
            return (2, 0)
        if route_host.startswith("*."):
            suffix = route_host[1:]
            return (1, -len(suffix)) if name.endswith(suffix) and len(name) > len(suffix) else None
        return (0, 0) if route_host == name else None

    def path_matches(prefix: str) -> bool:
        bare = prefix.rstrip("/")
        return not bare or path == bare or path.startswith(bare + "/")

    ranked = [
        (rank, -len(route.path_prefix.rstrip("/")), index, route)
        for index, route in enumerate(routes)
        if (rank := host_rank(route.host)) is not None and path_matches(route.path_prefix)
    ]
    return min(ranked, key=lambda item: item[:3])[3] if ranked else None


@given(
    st.lists(st.tuples(ROUTE_HOSTS, PREFIXES), max_size=12),
    st.lists(st.tuples(REQUEST_HOSTS, SEGMENTS, st.booleans()), min_size=1, max_size=20),
)
def test_table_matches_as_the_rules_say(route_specs, requests):
    routes = [route(f"r{index}", host=host, path_prefix=prefix) for index, (host, prefix) in enumerate(route_specs)]
    table = RouteTable(routes, default=None)
    for host, path, trailing_slash in requests:
        request_path = path + "/" if trailing_slash and path != "/" else path
        assert table.match(host, request_path) is reference_match(routes, host, request_path), (host, request_path)


@given(st.lists(st.tuples(ROUTE_HOSTS, PREFIXES), max_size=8), REQUEST_HOSTS, SEGMENTS)
def test_the_longest_matching_prefix_wins_within_a_host(route_specs, host, path):
    routes = [route(f"r{index}", host=host_, path_prefix=prefix) for index, (host_, prefix) in enumerate(route_specs)]
    matched = RouteTable(routes, default=None).match(host, path)
    if matched is None:
        return
    rivals = [other for other in routes if other.host == matched.host and reference_match([other], host, path)]
    assert all(len(other.path_prefix.rstrip("/")) <= len(matched.path_prefix.rstrip("/")) for other in rivals)
    ties = [other for other in rivals if len(other.path_prefix.rstrip("/")) == len(matched.path_prefix.rstrip("/"))]
    assert ties[0] is matched, "a tie goes to the route first in the file"


@given(st.lists(st.tuples(ROUTE_HOSTS, PREFIXES), max_size=8), REQUEST_HOSTS, SEGMENTS)
def test_the_default_serves_exactly_what_no_route_matches(route_specs, host, path):
    routes = [route(f"r{index}", host=host_, path_prefix=prefix) for index, (host_, prefix) in enumerate(route_specs)]
    fallback = route("fallback")
    matched = RouteTable(routes, default=fallback).match(host, path)
    assert (matched is fallback) is (reference_match(routes, host, path) is None)


def test_wildcard_ties_go_to_the_longer_suffix_then_the_longer_prefix_then_file_order():
    routes = [
        route("broad-deep", host="*.com", path_prefix="/a/b"),
        route("narrow-root", host="*.example.com"),
        route("narrow-first", host="*.example.com", path_prefix="/a"),
        route("narrow-second", host="*.example.com", path_prefix="/a/"),
    ]
    table = RouteTable(routes, default=None)
    assert table.match("x.example.com", "/a/b").name == "narrow-first"  # type: ignore[union-attr]
    assert table.match("x.example.com", "/z").name == "narrow-root"  # type: ignore[union-attr]
    assert table.match("x.other.com", "/a/b").name == "broad-deep"  # type: ignore[union-attr]


# --- the new keys -----------------------------------------------------------------------------------------------


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


def test_reserved_tags_are_the_ones_the_gateway_writes():
    assert {HTTP_HOST, HTTP_METHOD, HTTP_PATH, HTTP_STATUS_CODE, ERROR} == RESERVED_TAGS


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


def test_upstream_url_is_the_base_without_a_default_port():
    assert parse_upstream("http://web:80/v1/").url == "http://web/v1"
    assert parse_upstream("https://[::1]:8443").url == "https://[::1]:8443"


def test_a_file_nested_too_deeply_is_an_error_not_a_crash(route_file):
    path = route_file("routes: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == f"{path}: invalid YAML: nested too deeply"
