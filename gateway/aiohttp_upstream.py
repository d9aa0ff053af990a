"""The upstream seam over `aiohttp.ClientSession`: a C-accelerated HTTP/1.1 parser and pool (docs/performance.md)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from types import TracebackType

import aiohttp
from yarl import URL

from gateway.proxy import UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamTimeout, UpstreamUnreachable

# aiohttp adds these unless told not to; a proxy sends only what the client sent.
_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_STREAM_CHUNK = 64 * 1024


class AiohttpUpstream:
    """One shared ClientSession: a keep-alive pool, no decompression, no redirects, no proxies from the env."""

    def __init__(self, timeout: float, max_connections: int) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, enable_cleanup_closed=False),
            # Socket-level timeouts only: a `connect` or `total` timeout arms an extra timer on every request, even
            # on a pooled connection. sock_read bounds the wait for the response headers and each body read.
            timeout=_socket_timeout(timeout),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers]
        with _MappedErrors():
            response = await self._session.request(
                request.method,
                # encoded=True: the client's path and query go upstream byte for byte, not re-quoted by yarl.
                URL(request.url, encoded=True),
                headers=headers,
                data=request.body,
                allow_redirects=False,
                compress=None,
                timeout=self._session.timeout if request.timeout is None else _socket_timeout(request.timeout),
            )
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        await self._session.close()


@functools.lru_cache(maxsize=64)  # a few distinct route timeouts, built once each
def _socket_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        # Lowercase, as ASGI headers are, so that the hop-by-hop rules compare like with like.
        self.headers = [(name.lower(), value) for name, value in response.raw_headers]

    async def body(self) -> AsyncIterator[bytes]:
        with _MappedErrors():
            async for chunk in self._response.content.iter_chunked(_STREAM_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool; an unread one is closed, cancelling the upstream.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class _MappedErrors:
    """Maps aiohttp's errors to the gateway's, in one place."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("upstream timed out") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise UpstreamUnreachable("upstream unreachable") from exc
        if isinstance(exc, aiohttp.ClientError):
            raise UpstreamError(f"upstream failed: {type(exc).__name__}") from exc
