from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.route_table import RouteTable
from gateway.routes import Route, parse_upstream

WEB = parse_upstream("http://web-svc.emojivoto:80")


def route(name: str, host: str | None = None, path_prefix: str = "/") -> Route:
    return Route(name=name, upstream=WEB, host=host, path_prefix=path_prefix)


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
    """The rules, as docs/routes.md states them: exact host, then the most specific wildcard, then any host; among the
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
