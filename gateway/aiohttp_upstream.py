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
        # aiohttp writes header values as UTF-8: a value decoded from UTF-8 goes out byte for byte. Anything else
        # (obs-text, RFC 9110 5.5) cannot, and goes out as its Latin-1 reading, which the upstream can reverse.
        try:
            headers = [(name.decode("latin-1"), value.decode("utf-8")) for name, value in request.headers]
        except UnicodeDecodeError:
            headers = [(name.decode("latin-1"), _header_text(value)) for name, value in request.headers]
        body = _TrackedBody(request.body) if request.body is not None else None
        with _MappedErrors(body):
            response = await self._session.request(
                request.method,
                # encoded=True: the client's path and query go upstream byte for byte, not re-quoted by yarl.
                URL(request.url, encoded=True),
                headers=headers,
                data=body.chunks() if body is not None else None,
                allow_redirects=False,
                compress=None,
                timeout=self._session.timeout if request.timeout is None else _socket_timeout(request.timeout),
            )
        return _AiohttpResponse(response, body)

    async def aclose(self) -> None:
        await self._session.close()


def _header_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


@functools.lru_cache(maxsize=64)  # a few distinct route timeouts, built once each
def _socket_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


class _AiohttpResponse:
    __slots__ = ("_body", "_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse, body: _TrackedBody | None) -> None:
        self._response = response
        # An upstream may answer before it has read the whole request body, which aiohttp goes on sending.
        self._body = body
        self.status_code = response.status
        # Lowercase, as ASGI headers are, so that the hop-by-hop rules compare like with like.
        self.headers = [(name.lower(), value) for name, value in response.raw_headers]

    async def body(self) -> AsyncIterator[bytes]:
        with _MappedErrors(self._body):
            async for chunk in self._response.content.iter_chunked(_STREAM_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool; an unread one is closed, cancelling the upstream.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class _TrackedBody:
    """The request body as aiohttp reads it, keeping any error of the body's own (the client went away mid-upload):
    aiohttp reports it as a connection error, which would put the blame on the upstream."""

    __slots__ = ("_source", "error")

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self.error: Exception | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._source:
                yield chunk
        except Exception as exc:
            self.error = exc
            raise


class _MappedErrors:
    """Maps aiohttp's errors to the gateway's, in one place; an error of the request body's own passes as it is."""

    __slots__ = ("_body",)

    def __init__(self, body: _TrackedBody | None) -> None:
        self._body = body

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if self._body is not None and self._body.error is not None and exc is not self._body.error:
            raise self._body.error from exc
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("upstream timed out") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise UpstreamUnreachable("upstream unreachable") from exc
        if isinstance(exc, aiohttp.ClientError):
            raise UpstreamError(f"upstream failed: {type(exc).__name__}") from exc
        if isinstance(exc, ValueError):
            # yarl or aiohttp refusing a URL or header the client's request made: a 502, never an unhandled 500.
            raise UpstreamError(f"request not sendable upstream: {type(exc).__name__}") from exc
