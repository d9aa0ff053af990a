"""Route matching: which of a table's routes serves a request, by Host and path prefix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar


class Matchable(Protocol):
    """What the table matches on; `Route` has it, and so does whatever the gateway builds around a route."""

    @property
    def host(self) -> str | None: ...

    @property
    def path_prefix(self) -> str: ...


RouteT = TypeVar("RouteT", bound=Matchable)
_Candidate = tuple[str, str, RouteT]  # (prefix without trailing '/', the same with '/', route)


class RouteTable(Generic[RouteT]):
    """Picks the route for a request: exact host, then wildcard host (most specific first), then any host;
    within each, the longest matching path prefix, then file order. A host's routes that all miss the path
    fall through to the next tier, so `host: a.com, path_prefix: /api` leaves a.com's other paths to the
    any-host routes and the default.
    """

    def __init__(self, routes: Sequence[RouteT], default: RouteT | None = None) -> None:
        self._exact: dict[str, list[_Candidate[RouteT]]] = {}
        self._wildcard: dict[str, list[_Candidate[RouteT]]] = {}
        self._any: list[_Candidate[RouteT]] = []
        self._default = default
        self.routes = tuple(routes)
        for route in routes:
            self._tier(route).append(_candidate(route))
        for candidates in (*self._exact.values(), *self._wildcard.values(), self._any):
            # Stable: routes with equally long prefixes keep their file order.
            candidates.sort(key=lambda candidate: len(candidate[0]), reverse=True)

    @property
    def default(self) -> RouteT | None:
        return self._default

    @property
    def routes_by_host(self) -> bool:
        """Whether any route names a host: if none does, the request's Host need not be looked up."""
        return bool(self._exact or self._wildcard)

    def match(self, host: str, path: str) -> RouteT | None:
        name = _host_key(host)
        exact = self._exact.get(name)
        if exact and (route := _first_match(exact, path)):
            return route
        if self._wildcard and (route := self._match_wildcard(name, path)):
            return route
        return _first_match(self._any, path) or self._default

    def _match_wildcard(self, name: str, path: str) -> RouteT | None:
        # '*.example.com' is stored as '.example.com'; searching from index 1 keeps at least one label in front,
        # so the apex never matches, and the leftmost dot gives the longest (most specific) suffix first.
        dot = name.find(".", 1)
        while dot != -1:
            candidates = self._wildcard.get(name[dot:])
            if candidates and (route := _first_match(candidates, path)):
                return route
            dot = name.find(".", dot + 1)
        return None

    def _tier(self, route: RouteT) -> list[_Candidate[RouteT]]:
        if route.host is None:
            return self._any
        host = route.host.lower()
        if host.startswith("*."):
            return self._wildcard.setdefault(host[1:], [])
        return self._exact.setdefault(host, [])


def _candidate(route: RouteT) -> _Candidate[RouteT]:
    prefix = route.path_prefix.rstrip("/")
    return prefix, prefix + "/", route


def _first_match(candidates: list[_Candidate[RouteT]], path: str) -> RouteT | None:
    # By path segments, as a Kubernetes Ingress `pathType: Prefix`: '/api' matches '/api', '/api/' and '/api/x'
    # but not '/apix'; the root prefix ('' once stripped) matches every path.
    for prefix, prefix_slash, route in candidates:
        if not prefix or path == prefix or path.startswith(prefix_slash):
            return route
    return None


def _host_key(host: str) -> str:
    # The port is not part of the name, nor is the trailing dot of an absolute name ('example.com.').
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    name = host.partition(":")[0]
    return (name[:-1] if name.endswith(".") else name).lower()
