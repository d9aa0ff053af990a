"""The reporter's Zipkin v2 JSON: a slice of exchanges written by the C encoder, with `build_spans` + `encode_batch`
(py_zipkin's span model, the one Python writer) as its fallback.

`gateway/_spanjson.c` writes the two spans of an exchange in one pass over its fields, about eight times faster
than building them as dicts for orjson, which was most of what tracing a request cost (docs/performance.md). What it
does not know it leaves to the fallback one exchange at a time: a client address, an upstream or a route's tags not
yet cached here (this fallback caches them), an exchange holding a field of an unexpected type. Without a C compiler
at install time the extension is missing and every exchange takes the fallback: slower, the same bytes once parsed.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from py_zipkin.encoding import Endpoint

from gateway.routes import RESERVED_TAGS
from gateway.spans import (
    Exchange,
    build_spans,
    client_address_json,
    encode_batch,
    endpoint_json,
    upstream_endpoint_json,
)

try:
    from gateway import _spanjson
except ImportError:  # built without a C compiler: setup.py's extension is optional
    _spanjson = None  # type: ignore[assignment]
else:
    _spanjson.bind(Exchange)

NATIVE = _spanjson is not None

# Client addresses come from the internet: the cache is emptied when it reaches this size, and refills from the
# addresses in use. Upstreams and tag sets change only with the route table.
MAX_CACHED_HOSTS = 4096
MAX_CACHED_ROUTES = 1024


class SliceEncoder:
    """Writes exchanges' spans as the items of a JSON list, for one local endpoint."""

    __slots__ = ("_local", "_local_json", "_hosts", "_upstreams", "_tag_sets")

    def __init__(self, local: Endpoint) -> None:
        self._local = local
        self._local_json = orjson.dumps(endpoint_json(local))
        self._hosts: dict[str | None, bytes] = {None: b""}
        # id(upstream) -> (upstream, its endpoint's JSON): holding the upstream keeps its id from being reused.
        self._upstreams: dict[int, tuple[object, bytes]] = {}
        self._tag_sets: dict[tuple[tuple[str, str], ...], bytes] = {}

    def items(self, exchanges: Sequence[Exchange]) -> bytes:
        """The two spans (SERVER, then CLIENT) of each exchange, comma-separated, without the list's brackets."""
        if _spanjson is None:
            return b",".join([self._fallback(exchange) for exchange in exchanges])
        return _spanjson.encode_exchanges(
            exchanges, self._local_json, self._hosts, self._upstreams, self._tag_sets, self._fallback
        )

    def _fallback(self, exchange: Exchange) -> bytes:
        self._cache(exchange)
        return encode_batch(build_spans(exchange, self._local))[1:-1]

    def _cache(self, exchange: Exchange) -> None:
        host = exchange.client_host
        if isinstance(host, str) and host not in self._hosts:
            if len(self._hosts) >= MAX_CACHED_HOSTS:
                self._hosts = {None: b""}
            self._hosts[host] = orjson.dumps(client_address_json(host))[1:-1]
        upstream = exchange.upstream
        if id(upstream) not in self._upstreams:
            if len(self._upstreams) >= MAX_CACHED_ROUTES:
                self._upstreams.clear()
            self._upstreams[id(upstream)] = (upstream, orjson.dumps(upstream_endpoint_json(upstream)))
        tags = exchange.tags
        # A tag named like one of the gateway's own is refused in a route file; an Exchange made with one anyway
        # keeps to the fallback, where the gateway's tag wins.
        if tags and tags not in self._tag_sets and not RESERVED_TAGS.intersection(name for name, _ in tags):
            if len(self._tag_sets) >= MAX_CACHED_ROUTES:
                self._tag_sets.clear()
            self._tag_sets[tags] = orjson.dumps(dict(tags))[1:-1] + b","
