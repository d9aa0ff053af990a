"""The reverse proxy: bodies streamed both ways, hop-by-hop headers stripped, X-Forwarded-* and Host."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Echo, Gateway, GatewayFactory, Upstream, rss_kib
from tests.e2e.upstream_app import BODY_SHA256, pattern_bytes

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
CHUNK = 64 * 1024
REQUEST_HOP_BY_HOP = {
    "Connection": "keep-alive, X-Client-Hop",
    "X-Client-Hop": "secret",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Upgrade": "h2c",
    "Proxy-Authorization": "Basic dXNlcjpwYXNz",
}
# Transfer-Encoding is not checked: the gateway's own server may chunk a response it relays.
RESPONSE_HOP_BY_HOP = ("x-custom-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade")


def test_bodies_stream_both_ways_intact_without_buffering(start_gateway: GatewayFactory, client: httpx.Client) -> None:
    gateway = start_gateway()
    upload(client, gateway, MIB)
    download(client, gateway, MIB)
    before = rss_kib(gateway.pid)

    assert upload(client, gateway, 8 * MIB) == 8 * MIB
    assert download(client, gateway, 8 * MIB) == 8 * MIB

    peak = rss_kib(gateway.pid, "VmHWM")
    grown = (peak - before) * 1024
    assert grown < 8 * MIB, f"the gateway's peak RSS grew by {grown / MIB:.1f} MiB while moving 8 MiB bodies"


def test_hop_by_hop_headers_are_stripped_both_ways(start_gateway: GatewayFactory, client: httpx.Client) -> None:
    gateway = start_gateway()

    echo = Echo.of(client.get(f"{gateway.url}/hop-request", headers={**REQUEST_HOP_BY_HOP, "X-Client-Kept": "yes"}))
    for name in ("x-client-hop", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"):
        assert not echo.has(name), f"upstream got hop-by-hop {name}: {echo.all(name)}"
    assert not any("x-client-hop" in value.lower() for value in echo.all("connection")), echo.all("connection")
    assert echo.one("x-client-kept") == "yes"

    response = client.get(f"{gateway.url}/hop")
    assert (response.status_code, response.content) == (200, b"hop")
    for name in RESPONSE_HOP_BY_HOP:
        assert name not in response.headers, f"client got hop-by-hop {name}: {response.headers[name]}"
    assert "x-custom-hop" not in response.headers.get("connection", "").lower()
    assert response.headers["x-kept"] == "yes"


def test_forwarded_headers_and_host(start_gateway: GatewayFactory, upstream: Upstream, client: httpx.Client) -> None:
    gateway = start_gateway()
    echo = Echo.of(
        client.get(f"{gateway.url}/fwd", headers={"Host": "shop.example.com", "X-Forwarded-For": "203.0.113.9"})
    )
    assert echo.one("host") == upstream.authority
    assert echo.one("x-forwarded-host") == "shop.example.com"
    assert echo.one("x-forwarded-proto") == "http"
    assert forwarded_for(echo) == ["203.0.113.9", "127.0.0.1"]

    echo = Echo.of(client.get(f"{gateway.url}/fwd"))
    assert forwarded_for(echo) == ["127.0.0.1"]
    assert echo.one("x-forwarded-host") == f"127.0.0.1:{gateway.port}"

    preserving = start_gateway(preserve_host=True)
    echo = Echo.of(client.get(f"{preserving.url}/fwd", headers={"Host": "shop.example.com"}))
    assert echo.one("host") == "shop.example.com"


def test_method_path_query_headers_and_body_pass_through(start_gateway: GatewayFactory, client: httpx.Client) -> None:
    gateway = start_gateway()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = client.request(
            method,
            f"{gateway.url}/a%20b/c%2Fd?x=1&x=2&y=a%2Fb+c",
            headers=[("X-Multi", "one"), ("X-Multi", "two"), ("User-Agent", "e2e")],
            content=b"b" * 1000 if method in ("POST", "PUT", "PATCH") else None,
        )
        echo = Echo.of(response)
        assert echo.method == method
        assert echo.query == "x=1&x=2&y=a%2Fb+c"
        assert echo.all("x-multi") in (["one", "two"], ["one, two"])
        assert echo.one("user-agent") == "e2e"
        assert echo.body_length == (1000 if method in ("POST", "PUT", "PATCH") else 0)
    raw = client.get(f"{gateway.url}/a%20b/c%2Fd").json()["raw_path"]
    assert raw == "/a%20b/c%2Fd", "the path was re-encoded on the way upstream"


def upload(client: httpx.Client, gateway: Gateway, size: int) -> int:
    """Stream `size` bytes up in chunks; check the upstream read them intact; return the length it saw."""
    pieces = pattern_bytes(size, CHUNK)

    def body() -> Iterator[bytes]:
        yield from pieces

    response = client.post(f"{gateway.url}/upload", content=body())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert answer["chunks"] > 1, "the upstream got the whole upload in one piece"
    return int(answer["length"])


def download(client: httpx.Client, gateway: Gateway, size: int) -> int:
    """Stream `size` bytes down; check them against the hash the upstream announced; return the length read."""
    digest = hashlib.sha256()
    length = 0
    with client.stream("GET", f"{gateway.url}/stream", params={"size": size, "chunk": CHUNK}) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            length += len(chunk)
        assert digest.hexdigest() == response.headers[BODY_SHA256]
    return length


def forwarded_for(echo: Echo) -> list[str]:
    return [hop.strip() for value in echo.all("x-forwarded-for") for hop in value.split(",")]
