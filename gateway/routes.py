"""Route table: which upstream serves a request, by Host and path prefix, and the YAML file it comes from."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import yaml

DEFAULT_PORTS = {"http": 80, "https": 443}
ROUTE_KEYS = ("name", "host", "path_prefix", "upstream", "sample_rate")

# Labels of letters, digits, '-' and '_' (Kubernetes service names carry no '_', but DNS allows it), optionally
# behind one leading '*.' label; an IPv6 literal goes in brackets, as in a Host header.
_LABELS = r"([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(\*\.)?{_LABELS}")
_UPSTREAM_HOST = re.compile(_LABELS)
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")
_MERGE_TAG = "tag:yaml.org,2002:merge"
# How error messages name what a YAML value turned out to be.
_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a route's requests go. ``authority`` is what a Host header would carry for it."""

    scheme: str
    host: str
    port: int
    base_path: str = ""
    authority: bytes = field(init=False, repr=False)
    _url_prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == DEFAULT_PORTS.get(self.scheme) else f"{host}:{self.port}"
        object.__setattr__(self, "authority", authority.encode("ascii"))
        object.__setattr__(self, "_url_prefix", f"{self.scheme}://{authority}{self.base_path}")

    def url_for(self, path: str, query: bytes) -> str:
        if query:
            return f"{self._url_prefix}{path}?{query.decode('latin-1')}"
        return self._url_prefix + path


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    upstream: Upstream
    host: str | None = None
    path_prefix: str = "/"
    sample_rate: float | None = None


_Candidate = tuple[str, str, Route]  # (prefix without trailing '/', the same with '/', route)


class RouteFileError(ValueError):
    """A route file that cannot be used; the message is one line naming the file and the entry."""


class RouteTable:
    """Picks the route for a request: exact host, then wildcard host (most specific first), then any host;
    within each, the longest matching path prefix, then file order. A host's routes that all miss the path
    fall through to the next tier, so `host: a.com, path_prefix: /api` leaves a.com's other paths to the
    any-host routes and the default.
    """

    def __init__(self, routes: Sequence[Route], default: Route | None = None) -> None:
        self._exact: dict[str, list[_Candidate]] = {}
        self._wildcard: dict[str, list[_Candidate]] = {}
        self._any: list[_Candidate] = []
        self._default = default
        for route in routes:
            self._tier(route).append(_candidate(route))
        for candidates in (*self._exact.values(), *self._wildcard.values(), self._any):
            # Stable: routes with equally long prefixes keep their file order.
            candidates.sort(key=lambda candidate: len(candidate[0]), reverse=True)

    @property
    def routes_by_host(self) -> bool:
        """Whether any route names a host: if none does, the request's Host need not be looked up."""
        return bool(self._exact or self._wildcard)

    def match(self, host: str, path: str) -> Route | None:
        name = _host_key(host)
        exact = self._exact.get(name)
        if exact and (route := _first_match(exact, path)):
            return route
        if self._wildcard and (route := self._match_wildcard(name, path)):
            return route
        return _first_match(self._any, path) or self._default

    def _match_wildcard(self, name: str, path: str) -> Route | None:
        # '*.example.com' is stored as '.example.com'; searching from index 1 keeps at least one label in front,
        # so the apex never matches, and the leftmost dot gives the longest (most specific) suffix first.
        dot = name.find(".", 1)
        while dot != -1:
            candidates = self._wildcard.get(name[dot:])
            if candidates and (route := _first_match(candidates, path)):
                return route
            dot = name.find(".", dot + 1)
        return None

    def _tier(self, route: Route) -> list[_Candidate]:
        if route.host is None:
            return self._any
        host = route.host.lower()
        if host.startswith("*."):
            return self._wildcard.setdefault(host[1:], [])
        return self._exact.setdefault(host, [])


def parse_upstream(url: str) -> Upstream:
    """Parse an upstream base URL such as ``http://web-svc.emojivoto:80`` or ``https://api.internal/v1``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    # Checked first so that no later message echoes a password.
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"must be an http:// or https:// URL (got {url!r})")
    if not parts.hostname:
        raise ValueError(f"has no host (got {url!r})")
    if not parts.hostname.isascii():
        raise ValueError(f"host must be ASCII; write an internationalised name in its xn-- form (got {url!r})")
    # urlsplit has already checked a bracketed IPv6 literal, the one host form with ':' in it.
    if ":" not in parts.hostname and not _UPSTREAM_HOST.fullmatch(parts.hostname):
        raise ValueError(f"has an invalid host name (got {url!r})")
    if "?" in url or "#" in url:
        raise ValueError(f"must not have a query or fragment (got {url!r})")
    return Upstream(parts.scheme, parts.hostname, _port(parts, url), parts.path.rstrip("/"))


def load_routes(path: Path) -> list[Route]:
    """Read and validate a route file; every problem raises RouteFileError naming the file and the entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RouteFileError(f"{path}: cannot read route file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RouteFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise RouteFileError(f"{path}: invalid YAML{_yaml_problem(exc)}") from None
    try:
        return _parse_document(document)
    except _EntryError as exc:
        raise RouteFileError(f"{path}: {exc}") from None


def _candidate(route: Route) -> _Candidate:
    prefix = route.path_prefix.rstrip("/")
    return prefix, prefix + "/", route


def _first_match(candidates: list[_Candidate], path: str) -> Route | None:
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


def _port(parts: SplitResult, url: str) -> int:
    try:
        port = parts.port  # raises for a port that is not a number or beyond 65535
    except ValueError:
        port = 0
    if port is None:
        return DEFAULT_PORTS[parts.scheme]
    if port == 0:
        raise ValueError(f"port must be a number within 1-65535 (got {url!r})")
    return port


class _EntryError(Exception):
    """A problem in the document, located like `routes[2].sample_rate: ...`; load_routes adds the file name."""


def _parse_document(document: Any) -> list[Route]:
    if not isinstance(document, dict):
        raise _EntryError(f"expected a mapping with a 'routes' list at the top level (got {_kind(document)})")
    unknown = sorted(str(key) for key in document if key != "routes")
    if unknown:
        raise _EntryError(f"unknown top-level key {unknown[0]!r} (allowed: routes)")
    entries = document.get("routes")
    if not isinstance(entries, list):
        raise _EntryError(f"routes: must be a list of routes (got {_kind(entries)})")
    if not entries:
        raise _EntryError("routes: must list at least one route")
    routes = [_parse_entry(entry, f"routes[{index}]") for index, entry in enumerate(entries)]
    _check_unique(routes)
    return routes


def _parse_entry(entry: Any, where: str) -> Route:
    if not isinstance(entry, dict):
        raise _EntryError(f"{where}: must be a mapping (got {_kind(entry)})")
    unknown = sorted(str(key) for key in entry if key not in ROUTE_KEYS)
    if unknown:
        raise _EntryError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(ROUTE_KEYS))})")
    if "upstream" not in entry:
        raise _EntryError(f"{where}.upstream: is required")
    host = _host(entry.get("host"), f"{where}.host")
    path_prefix = _path_prefix(entry.get("path_prefix", "/"), f"{where}.path_prefix")
    return Route(
        name=_name(entry.get("name"), host, path_prefix, f"{where}.name"),
        upstream=_upstream(entry["upstream"], f"{where}.upstream"),
        host=host,
        path_prefix=path_prefix,
        sample_rate=_sample_rate(entry.get("sample_rate"), f"{where}.sample_rate"),
    )


def _name(value: Any, host: str | None, path_prefix: str, where: str) -> str:
    if value is None:
        return f"{host or ''}{path_prefix}"
    if not isinstance(value, str) or not value.strip():
        raise _EntryError(f"{where}: must be a non-empty string (got {value!r})")
    return value


def _host(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _EntryError(f"{where}: must be a string (got {value!r})")
    host = value.lower()
    if not (_HOST_NAME.fullmatch(host) or _IPV6_LITERAL.fullmatch(host)):
        raise _EntryError(
            f"{where}: must be a host name such as 'example.com' or '*.example.com',"
            f" without scheme, port or path (got {value!r})"
        )
    return host


def _path_prefix(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _EntryError(f"{where}: must be a string (got {value!r})")
    if not value.startswith("/"):
        raise _EntryError(f"{where}: must start with '/' (got {value!r})")
    if "?" in value or "#" in value:
        raise _EntryError(f"{where}: must be a path, without '?' or '#' (got {value!r})")
    return value


def _upstream(value: Any, where: str) -> Upstream:
    if not isinstance(value, str):
        raise _EntryError(f"{where}: must be a URL string (got {value!r})")
    try:
        return parse_upstream(value)
    except ValueError as exc:
        raise _EntryError(f"{where}: {exc}") from None


def _sample_rate(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _EntryError(f"{where}: must be a number (got {value!r})")
    if not 0.0 <= value <= 1.0:
        raise _EntryError(f"{where}: must be within [0.0, 1.0] (got {value!r})")
    return float(value)


def _check_unique(routes: list[Route]) -> None:
    names: dict[str, int] = {}
    matches: dict[tuple[str | None, str], int] = {}
    for index, route in enumerate(routes):
        # '/api' and '/api/' select the same requests, so they are one prefix.
        match = (route.host, route.path_prefix.rstrip("/"))
        if match in matches:
            raise _EntryError(f"routes[{index}]: same host and path_prefix as routes[{matches[match]}]")
        if route.name in names:
            raise _EntryError(f"routes[{index}].name: {route.name!r} is already used by routes[{names[route.name]}]")
        matches[match] = names[route.name] = index


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem
        # A 'while parsing ...' context only says where PyYAML was; another context is the first half of the
        # sentence ("expected a single document in the stream", "but found another document").
        if exc.context and not exc.context.startswith("while "):
            problem = f"{exc.context}, {problem}"
        return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f" at character {exc.position + 1}: {exc.reason} (#x{exc.character:04x})"
    return ": " + " ".join(str(exc).split())


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, where PyYAML silently keeps the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # '<<: *alias' merges a mapping, whose keys explicit ones may override
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it as "found unhashable key"
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
