"""A whole payload POSTed to a collector's URL, and its whole answer read back, on the gateway's own HTTP/1.1 client.

httpx spent about 1.1 ms of CPU on each POST of a batch, a fifth of what tracing cost a request under load;
`Http1Upstream` does the same POST in about 0.13 ms (docs/performance.md). What httpx did for the reporter besides
is done here, and only that:

- the URL's `user:password@` becomes `Authorization: Basic`, percent-decoded as httpx decodes it, and never goes out in
  the request line (nor in an error message); an Authorization header of the caller's wins over it;
- https is checked against the system's trust store with the hostname, as for upstreams: OpenSSL reads
  SSL_CERT_FILE and SSL_CERT_DIR, so a collector behind a private CA can be trusted (httpx, with `trust_env=False`,
  used certifi's bundle and ignored both);
- the timeout bounds connecting, sending until the answer's head, each wait for more of its body, and the body
  as a whole; at most MAX_ANSWER_BYTES of the body are kept, and a connection whose answer is longer is dropped
  unread, so a hostile collector can neither hold the reporter nor make it buffer without bound;
- one keep-alive connection, reused; a POST that meets it closed by the collector (the keep-alive race) is sent
  once more on a new one, as the payload is held whole;
- no redirects followed, no proxies, no cookies.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from urllib.parse import quote, unquote

from gateway import __version__
from gateway.http1_upstream import Http1Response, Http1Upstream, PooledConnectionClosed
from gateway.proxy import UpstreamError, UpstreamRequest, UpstreamTimeout, UpstreamUnreachable

# A collector's answer is a status, perhaps an error message or an OTLP partial success: a few hundred bytes.
MAX_ANSWER_BYTES = 64 * 1024
# One connection: the reporter sends one batch at a time per collector.
MAX_CONNECTIONS = 1
USER_AGENT = f"ingress-gateway/{__version__}"
# The body's framing is this module's to write: a caller's value would contradict the payload's real length.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
# What a URL's path and query may hold as they are (RFC 3986's reserved and unreserved characters, and "%" for what
# is already escaped); anything else (a space, a non-ASCII character) is percent-encoded, as httpx does.
_URL_SAFE = ":/?[]@!$&'()*+,;=%~"


class PostFailed(Exception):
    """The POST got no whole answer: no connection, a timeout, or an answer that is not HTTP. The collector may be
    back soon; the message names no credential."""


@dataclass(frozen=True, slots=True)
class CollectorAnswer:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lowercase
    body: bytes  # at most MAX_ANSWER_BYTES: the start of a longer one

    def header(self, name: str) -> str:
        """The first value of the header ``name`` (any case), or "" when the answer has none."""
        wanted = name.lower().encode("ascii")
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return ""

    @property
    def text(self) -> str:
        """The body as text, for error messages: UTF-8 with anything else replaced, as httpx's default."""
        return self.body.decode("utf-8", errors="replace")


class CollectorPost:
    """POSTs payloads to ``url`` with ``headers`` (in their order, a caller's duplicates kept)."""

    def __init__(self, url: str, headers: Sequence[tuple[str, str]], timeout: float) -> None:
        self._url, credentials = _without_credentials(url)
        self._timeout = timeout
        self._headers = _request_headers(headers, credentials)
        self._upstream = Http1Upstream(timeout, MAX_CONNECTIONS)

    async def post(self, payload: bytes) -> CollectorAnswer:
        """Sends ``payload`` and reads the answer, whatever its status; raises PostFailed when there is none."""
        try:
            try:
                response = await self._upstream.forward(self._request(payload))
            except PooledConnectionClosed:
                # The collector closed its idle connection as the POST went out: nothing was answered, and most
                # likely nothing read. One it had read would arrive twice, as after any answer lost on the way.
                response = await self._upstream.forward(self._request(payload))
            try:
                async with asyncio.timeout(self._timeout):
                    body = await _start_of(response)
            finally:
                await response.aclose()
        # OSError includes the TimeoutError of the body's bound; UnicodeError is a host name that IDNA cannot encode
        # (a label of more than 63 characters), which getaddrinfo raises as it is.
        except (UpstreamError, OSError, UnicodeError) as exc:
            raise PostFailed(_failure(exc, self._timeout)) from exc
        return CollectorAnswer(response.status_code, response.headers, body)

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def _request(self, payload: bytes) -> UpstreamRequest:
        headers = [*self._headers, (b"content-length", b"%d" % len(payload))]
        return UpstreamRequest("POST", self._url, headers, _once(payload))


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


async def _start_of(response: Http1Response) -> bytes:
    """The body, or its first MAX_ANSWER_BYTES: the rest is left unread, and the response's aclose then drops the
    connection rather than pool one that is mid-answer."""
    kept = bytearray()
    async with aclosing(response.body()) as chunks:
        async for chunk in chunks:
            if len(kept) + len(chunk) > MAX_ANSWER_BYTES:
                kept += chunk[: MAX_ANSWER_BYTES - len(kept)]
                break
            kept += chunk
    return bytes(kept)


def _failure(exc: BaseException, timeout: float) -> str:
    """What went wrong, for the reporter's log, in the collector's terms; a failed connect says why (refused, no
    such name, a certificate not trusted)."""
    if isinstance(exc, UpstreamTimeout | TimeoutError):
        return f"the collector did not answer within the timeout ({timeout:g} s)"
    if isinstance(exc, UpstreamUnreachable) and exc.__cause__ is not None:
        return f"cannot connect to the collector: {type(exc.__cause__).__name__}: {exc.__cause__}"
    if isinstance(exc, UpstreamError):
        message = str(exc)
        for prefix in ("upstream failed: ", "request not sendable upstream: "):
            message = message.removeprefix(prefix)
        return f"collector failed: {message}"
    return f"collector failed: {type(exc).__name__}: {exc}"


def _without_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL to send (no userinfo, no fragment, its path percent-encoded, an IDN host in ASCII), and the userinfo's
    user and password, percent-decoded.

    Split by hand, as Http1Upstream splits a URL, so that a URL no parser accepts still loses its credentials before
    anything repeats it in an error."""
    scheme, separator, rest = url.strip().partition("://")
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    authority, target = rest[:end], rest[end:].partition("#")[0]
    userinfo, at, host = authority.rpartition("@")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = quote(host, safe="[]:")  # as ASCII, whose resolution fails with IDNA's own reason
    credentials = None
    if at:
        user, _, password = userinfo.partition(":")
        user, password = unquote(user), unquote(password)
        if user or password:  # httpx's rule: `http://@host` and `http://:@host` carry none
            credentials = (user, password)
    return f"{scheme}{separator}{host}{quote(target, safe=_URL_SAFE)}", credentials


def _request_headers(
    headers: Sequence[tuple[str, str]], credentials: tuple[str, str] | None
) -> list[tuple[bytes, bytes]]:
    """The caller's headers as bytes (values in UTF-8, as percent-decoded settings hold them), then Basic
    authentication from the URL unless they have their own Authorization, and a User-Agent unless they name one."""
    encoded = [(name.encode(), value.encode()) for name, value in headers if name.lower() not in _FRAMING]
    names = {name.lower() for name, _ in headers}
    if credentials is not None and "authorization" not in names:
        token = base64.b64encode(":".join(credentials).encode())
        encoded.append((b"authorization", b"Basic " + token))
    if "user-agent" not in names:
        encoded.append((b"user-agent", USER_AGENT.encode()))
    return encoded
