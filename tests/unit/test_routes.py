from __future__ import annotations

from pathlib import Path

import pytest

from gateway.routes import Route, RouteFileError, RouteTable, Upstream, load_routes, parse_upstream
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


def test_the_example_route_file_loads_and_routes_emojivoto():
    routes = load_routes(REPO_ROOT / "config" / "routes.example.yaml")
    table = RouteTable(routes, default=None)
    vote = table.match("localhost:8080", "/api/vote")
    assert vote is not None
    assert vote.upstream == WEB
    assert vote.sample_rate == 1.0
    root = table.match("localhost:8080", "/")
    assert root is not None
    assert root.upstream == WEB
    assert root.sample_rate is None


ENTRY = "upstream: http://web"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "expected a mapping with a 'routes' list at the top level (got nothing)", id="empty-file"),
        pytest.param("# only a comment\n", "expected a mapping with a 'routes' list at the top level (got nothing)"),
        pytest.param(
            "- upstream: http://web\n", "expected a mapping with a 'routes' list at the top level (got a list)"
        ),
        pytest.param("just text\n", "expected a mapping with a 'routes' list at the top level (got a string)"),
        pytest.param("2024-01-01\n", "expected a mapping with a 'routes' list at the top level (got a date)"),
        pytest.param("rutes: []\n", "unknown top-level key 'rutes' (allowed: routes)", id="unknown-top-key"),
        pytest.param("version: 1\nroutes: []\n", "unknown top-level key 'version' (allowed: routes)"),
        pytest.param("{}\n", "routes: must be a list of routes (got nothing)", id="routes-missing"),
        pytest.param("routes:\n", "routes: must be a list of routes (got nothing)", id="routes-null"),
        pytest.param("routes:\n  upstream: http://web\n", "routes: must be a list of routes (got a mapping)"),
        pytest.param("routes: []\n", "routes: must list at least one route", id="routes-empty"),
        pytest.param(
            "routes:\n  - http://web\n", "routes[0]: must be a mapping (got a string)", id="entry-not-mapping"
        ),
        pytest.param("routes:\n  -\n", "routes[0]: must be a mapping (got nothing)", id="entry-null"),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    upstrem: http://web\n",
            "routes[0]: unknown key 'upstrem' (allowed: host, name, path_prefix, sample_rate, upstream)",
            id="unknown-key",
        ),
        pytest.param("routes:\n  - host: a.com\n", "routes[0].upstream: is required", id="missing-upstream"),
        pytest.param(
            f"routes:\n  - {ENTRY}\n  - host: a.com\n", "routes[1].upstream: is required", id="second-entry-named"
        ),
        pytest.param(
            "routes:\n  - upstream: 8080\n", "routes[0].upstream: must be a URL string (got 8080)", id="upstream-int"
        ),
        pytest.param(
            "routes:\n  - upstream: ftp://web\n",
            "routes[0].upstream: must be an http:// or https:// URL (got 'ftp://web')",
            id="upstream-scheme",
        ),
        pytest.param(
            "routes:\n  - upstream: http://web:99999\n",
            "routes[0].upstream: port must be a number within 1-65535 (got 'http://web:99999')",
            id="upstream-port",
        ),
        pytest.param(
            "routes:\n  - upstream: http:///x\n",
            "routes[0].upstream: has no host (got 'http:///x')",
            id="upstream-host",
        ),
        pytest.param(
            "routes:\n  - upstream: http://web/?a=1\n",
            "routes[0].upstream: must not have a query or fragment (got 'http://web/?a=1')",
            id="upstream-query",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n  - {ENTRY}\n    path_prefix: /a\n  - {ENTRY}\n    path_prefix: /b\n"
            "    sample_rate: 1.5\n",
            "routes[2].sample_rate: must be within [0.0, 1.0] (got 1.5)",
            id="rate-above-one",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: -0.1\n",
            "routes[0].sample_rate: must be within [0.0, 1.0] (got -0.1)",
            id="rate-negative",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: .nan\n",
            "routes[0].sample_rate: must be within [0.0, 1.0] (got nan)",
            id="rate-nan",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: '0.5'\n",
            "routes[0].sample_rate: must be a number (got '0.5')",
            id="rate-string",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    sample_rate: true\n",
            "routes[0].sample_rate: must be a number (got True)",
            id="rate-bool",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: api\n",
            "routes[0].path_prefix: must start with '/' (got 'api')",
            id="prefix-relative",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: ''\n",
            "routes[0].path_prefix: must start with '/' (got '')",
            id="prefix-empty",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: /api?x=1\n",
            "routes[0].path_prefix: must be a path, without '?' or '#' (got '/api?x=1')",
            id="prefix-query",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    path_prefix: 5\n",
            "routes[0].path_prefix: must be a string (got 5)",
            id="prefix-int",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: http://a.com\n",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got 'http://a.com')",
            id="host-url",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: a.com:8080\n",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got 'a.com:8080')",
            id="host-port",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: '*'\n",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got '*')",
            id="host-bare-star",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: a.*.com\n",
            "routes[0].host: must be a host name such as 'example.com' or '*.example.com',"
            " without scheme, port or path (got 'a.*.com')",
            id="host-inner-star",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: 12\n", "routes[0].host: must be a string (got 12)", id="host-int"
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    name: ''\n",
            "routes[0].name: must be a non-empty string (got '')",
            id="name-empty",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    name: [a]\n",
            "routes[0].name: must be a non-empty string (got ['a'])",
            id="name-list",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    host: a.com\n    path_prefix: /api\n"
            f"  - {ENTRY}\n  - {ENTRY}\n    host: A.com\n    path_prefix: /api/\n",
            "routes[2]: same host and path_prefix as routes[0]",
            id="duplicate-host-and-prefix",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n  - {ENTRY}\n", "routes[1]: same host and path_prefix as routes[0]", id="dup-any"
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    name: web\n  - {ENTRY}\n    name: web\n    path_prefix: /x\n",
            "routes[1].name: 'web' is already used by routes[0]",
            id="duplicate-name",
        ),
        pytest.param(
            "routes:\n  - upstream: http://web\n   host: a.com\n",
            "invalid YAML at line 3, column 4: expected <block end>, but found '<block mapping start>'",
            id="yaml-indentation",
        ),
        pytest.param(
            "routes: [\n", "invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'"
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n    upstream: http://other\n",
            "invalid YAML at line 3, column 5: found duplicate key 'upstream'",
            id="yaml-duplicate-key",
        ),
        pytest.param(
            f"routes:\n  - {ENTRY}\n---\nroutes: []\n",
            "invalid YAML at line 3, column 1: expected a single document in the stream, but found another document",
            id="yaml-two-documents",
        ),
        pytest.param(
            "routes:\n\t- upstream: http://web\n",
            "invalid YAML at line 2, column 1: found character '\\t' that cannot start any token",
            id="yaml-tab",
        ),
        pytest.param(
            'routes:\n  - upstream: "http://web\x07"\n',
            "invalid YAML at character 34: special characters are not allowed (#x0007)",
            id="yaml-control-character",
        ),
    ],
)
def test_route_file_errors_name_the_file_and_the_entry(route_file, text, message):
    path = route_file(text)
    with pytest.raises(RouteFileError) as caught:
        load_routes(path)
    assert str(caught.value) == f"{path}: {message}"
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
