from __future__ import annotations

import pytest

from gateway.routes import (
    RESERVED_TAGS,
    Upstream,
    check_host,
    check_path_prefix,
    check_span_name,
    parse_upstream,
    render_span_name,
)
from gateway.spans import ERROR, HTTP_HOST, HTTP_METHOD, HTTP_PATH, HTTP_STATUS_CODE

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


def test_upstream_url_is_the_base_without_a_default_port():
    assert parse_upstream("http://web:80/v1/").url == "http://web/v1"
    assert parse_upstream("https://[::1]:8443").url == "https://[::1]:8443"


def test_reserved_tags_are_the_ones_the_gateway_writes():
    assert {HTTP_HOST, HTTP_METHOD, HTTP_PATH, HTTP_STATUS_CODE, ERROR} == RESERVED_TAGS


@pytest.mark.parametrize(
    ("host", "checked"),
    [
        ("example.com", "example.com"),
        ("Shop.Example.COM", "shop.example.com"),
        ("*.example.com", "*.example.com"),
        ("web-svc", "web-svc"),
        ("under_score.local", "under_score.local"),
        ("[::1]", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_check_host_gives_the_name_in_lower_case(host, checked):
    assert check_host(host) == checked


@pytest.mark.parametrize(
    "host", ["", "*", "a.*.com", "*.", "http://a.com", "a.com:8080", "a.com/x", "-a.com", "a..com", "[::1]:80"]
)
def test_check_host_refuses_what_a_host_header_cannot_name(host):
    with pytest.raises(ValueError) as caught:
        check_host(host)
    assert str(caught.value) == (
        f"must be a host name such as 'example.com' or '*.example.com', without scheme, port or path (got {host!r})"
    )


@pytest.mark.parametrize(
    ("path_prefix", "message"),
    [
        ("api", "must start with '/' (got 'api')"),
        ("", "must start with '/' (got '')"),
        ("/api?x=1", "must be a path, without '?' or '#' (got '/api?x=1')"),
        ("/api#top", "must be a path, without '?' or '#' (got '/api#top')"),
    ],
)
def test_check_path_prefix_refuses_what_is_not_a_path(path_prefix, message):
    assert check_path_prefix("/api/") == "/api/"
    with pytest.raises(ValueError) as caught:
        check_path_prefix(path_prefix)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{method} {path}", "GET /api/vote"),
        ("vote", "vote"),
        ("{{literal}} {method}", "{literal} GET"),
    ],
)
def test_a_checked_span_name_renders(template, rendered):
    assert render_span_name(check_span_name(template), "GET", "/api/vote") == rendered


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{route}", "unknown placeholder {route} (allowed: {method}, {path}) in '{route}'"),
        ("{path:>10}", "unknown placeholder {path:>10} (allowed: {method}, {path}) in '{path:>10}'"),
        ("{method!r}", "unknown placeholder {method!r} (allowed: {method}, {path}) in '{method!r}'"),
        ("{}", "unknown placeholder {} (allowed: {method}, {path}) in '{}'"),
        ("}", "Single '}' encountered in format string; write a literal brace as {{ or }} (got '}')"),
    ],
)
def test_check_span_name_refuses_what_render_span_name_cannot_fill(template, message):
    with pytest.raises(ValueError) as caught:
        check_span_name(template)
    assert str(caught.value) == message
