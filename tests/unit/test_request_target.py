from __future__ import annotations

import pytest

from gateway.forwarding import request_target_problem

PROXIED = [
    b"/",
    b"/api/vote?choice=:doughnut:",
    b"/.well-known/openid-configuration",
    b"/a..b/c.../...",
    b"/v1.2/file.tar.gz",
    b"/a?next=../../x",
    b"/a#../b",
    b"/%2e%2e%2e",
    b"/a%2fb",
    b"http://example.com",
    b"http://example.com/a/b?c",
    b"HTTPS://example.com/x",
]
DOT_SEGMENTS = [
    b"/..",
    b"/.",
    b"/a/../b",
    b"/a/./b",
    b"/a/..",
    b"/a/%2e%2e/b",
    b"/a/%2E%2e/b",
    b"/a/.%2e/b",
    b"/a%2f..%2fb",
    b"/a/..%5cb",
    b"/a/..\\b",
    b"/a\\..\\b",
    b"http://example.com/a/../b",
]
NOT_PROXIED = [b"*", b"example.com:443", b"ftp://example.com/x", b"x", b"", b"http:/x"]


@pytest.mark.parametrize("target", PROXIED)
def test_targets_the_gateway_proxies(target: bytes) -> None:
    assert request_target_problem(target) is None


@pytest.mark.parametrize("target", DOT_SEGMENTS)
def test_a_dot_segment_anywhere_in_the_path_is_refused(target: bytes) -> None:
    assert request_target_problem(target) == "dot-segments ('.' or '..') in the request path"


@pytest.mark.parametrize("target", NOT_PROXIED)
def test_asterisk_authority_and_other_schemes_are_not_proxied(target: bytes) -> None:
    assert request_target_problem(target) == "only origin-form and absolute-form request targets are proxied"
