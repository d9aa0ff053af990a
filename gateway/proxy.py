"""The upstream seam: `forward(request) -> response stream`, and its httpx implementation.

The request path only sees `Upstream`, `UpstreamRequest`, `UpstreamResponse` and `UpstreamError`, so the HTTP client
behind it can be swapped (see docs/performance.md) without touching the request flow or its tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import httpx

# httpx adds these to every request unless told otherwise; a proxy must send only what the client sent.
_CLIENT_DEFAULT_HEADERS = ("accept", "accept-encoding", "connection", "user-agent")
_STREAM_CHUNK = 64 * 1024


class UpstreamError(Exception):
    """The exchange with the upstream failed; `kind` is the metrics label, `status` what the client gets."""

    kind = "protocol"
    status = 502


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    status = 504


class UpstreamUnreachable(UpstreamError):
    kind = "unreachable"
    status = 502


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes] | None
    timeout: float | None = None  # a route's own timeout; None = the one the upstream was built with


class UpstreamResponse(Protocol):
    status_code: int
    headers: list[tuple[bytes, bytes]]

    def body(self) -> AsyncIterator[bytes]:
        """The raw body, as the upstream sent it (no decompression); raises UpstreamError mid-stream."""
        ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def forward(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


class HttpxUpstream:
    """One shared httpx.AsyncClient: a small keep-alive pool; redirects and proxies from the environment off."""

    def __init__(self, timeout: float, max_connections: int) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), limits=limits, follow_redirects=False, trust_env=False
        )
        for name in _CLIENT_DEFAULT_HEADERS:
            del self._client.headers[name]

    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        outgoing = self._client.build_request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body,
            timeout=httpx.USE_CLIENT_DEFAULT if request.timeout is None else request.timeout,
        )
        with _mapped_errors():
            response = await self._client.send(outgoing, stream=True)
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        # Lowercase, as ASGI headers are, so that the hop-by-hop rules compare like with like.
        self.headers = [(name.lower(), value) for name, value in response.headers.raw]

    async def body(self) -> AsyncIterator[bytes]:
        with _mapped_errors():
            async for chunk in self._response.aiter_raw(_STREAM_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class _mapped_errors:
    """Maps httpx's transport errors to the gateway's, in one place (as httpx maps httpcore's)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or not isinstance(exc, httpx.TransportError):
            return
        if isinstance(exc, httpx.TimeoutException):
            raise UpstreamTimeout("upstream timed out") from exc
        if isinstance(exc, httpx.ConnectError):
            raise UpstreamUnreachable("upstream unreachable") from exc
        raise UpstreamError(f"upstream failed: {type(exc).__name__}") from exc
