from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.https_redirect import redirect_location, valid_host


@pytest.mark.parametrize(
    ("host", "target", "port", "location"),
    [
        ("shop.example.com", "/cart?id=1&x=y", 443, "https://shop.example.com/cart?id=1&x=y"),
        ("shop.example.com:80", "/", 8443, "https://shop.example.com:8443/"),
        ("Shop.Example.COM", "/a", 443, "https://shop.example.com/a"),
        ("example.com.", "/", 443, "https://example.com/"),
        ("127.0.0.1:8080", "/x", 8443, "https://127.0.0.1:8443/x"),
        ("[::1]:8080", "/x", 443, "https://[::1]/x"),
        ("[2001:DB8::1]", "/", 443, "https://[2001:db8::1]/"),
        ("h", "http://other.example/p?q=1", 443, "https://h/p?q=1"),
        ("h", "*", 443, "https://h/"),
        ("h", "//evil.example/x", 443, "https://h/evil.example/x"),
        ("h", "/a b\u00e9<>", 443, "https://h/a%20b%C3%A9%3C%3E"),
        ("h", "/%2F?a=%20", 443, "https://h/%2F?a=%20"),
    ],
)
def test_locations(host, target, port, location):
    assert redirect_location(host, target, port) == location


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "evil.example/path",
        "a@evil.example",
        "evil.example\r\nSet-Cookie: x",
        "-bad.example",
        "bad-.example",
        "a..b",
        "a b",
        "x" * 64 + ".example",
        "host:port",
        "host:99999",
        "[::1",
        "[nope]:80",
        "[::1]x",
        "例え.jp",
    ],
)
def test_invalid_hosts_get_no_location(host):
    assert valid_host(host) is None
    assert redirect_location(host, "/", 443) is None


@given(st.text(), st.text())
def test_a_location_is_always_one_https_url_on_a_valid_host(host, target):
    location = redirect_location(host, target, 8443)
    if location is not None:
        assert location.startswith("https://")
        assert location.isascii() and location.isprintable() and " " not in location
        authority = location[len("https://") :].split("/", 1)[0]
        assert authority.endswith(":8443")
        assert valid_host(authority) == authority.removesuffix(":8443")
