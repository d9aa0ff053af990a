"""Route table: which upstream serves a request, by Host and path prefix, and the YAML file it comes from."""

from __future__ import annotations

import re
import string
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import SplitResult, urlsplit

import yaml

DEFAULT_PORTS = {"http": 80, "https": 443}
ROUTE_KEYS = (
    "name",
    "host",
    "path_prefix",
    "upstream",
    "span_name",
    "sample_rate",
    "adaptive",
    "max_traces_per_second",
    "timeout",
    "tags",
    "protocol",
)
# How the gateway speaks to a route's upstream: HTTP/1.1, or HTTP/2 with prior knowledge (gRPC services, meshes).
PROTOCOLS = ("http1", "h2c")
ADAPTIVE_KEYS = ("target_traces_per_second", "min_sample_rate", "interval")
DEFAULT_MIN_SAMPLE_RATE = 0.001
DEFAULT_ADAPTIVE_INTERVAL = 10.0
MIN_ADAPTIVE_INTERVAL = 0.1
MAX_TIMEOUT = 3600.0
SPAN_NAME_FIELDS = ("method", "path")
# Tags the gateway writes on its spans itself (gateway/spans.py): a route may not set them.
RESERVED_TAGS = frozenset({"http.host", "http.method", "http.path", "http.status_code", "error"})
# The trace's tracestate, which the gateway appends to a sampled exchange's tags (gateway/spans.py). Not in
# RESERVED_TAGS, which the span encoders read as "a route's tags that clash", and this one never comes from a route.
TRACESTATE_TAG = "w3c.tracestate"

# Labels of letters, digits, '-' and '_' (Kubernetes service names carry no '_', but DNS allows it), optionally
# behind one leading '*.' label; an IPv6 literal goes in brackets, as in a Host header.
_LABELS = r"([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(\*\.)?{_LABELS}")
_UPSTREAM_HOST = re.compile(_LABELS)
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")
_MERGE_TAG = "tag:yaml.org,2002:merge"
# How error messages name what a YAML value turned out to be.
_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}
_FORMATTER = string.Formatter()


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

    @property
    def url(self) -> str:
        """The base URL, as the gateway uses it (never with credentials: `parse_upstream` refuses them)."""
        return self._url_prefix

    def url_for(self, path: str, query: bytes) -> str:
        if query:
            return f"{self._url_prefix}{path}?{query.decode('latin-1')}"
        return self._url_prefix + path


@dataclass(frozen=True, slots=True)
class Adaptive:
    """A route's adaptive sampling: aim at ``target_traces_per_second`` new traces, never below the floor."""

    target_traces_per_second: float
    min_sample_rate: float = DEFAULT_MIN_SAMPLE_RATE
    interval: float = DEFAULT_ADAPTIVE_INTERVAL


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the route table. None means "the gateway-wide setting" (GATEWAY_SAMPLE_RATE, ...).

    ``span_name`` is a template with ``{method}`` and ``{path}``; None names spans ``"{method} <name>"``.
    ``max_traces_per_second`` of 0 means no cap for the route (the process-wide cap still holds).
    """

    name: str
    upstream: Upstream
    host: str | None = None
    path_prefix: str = "/"
    sample_rate: float | None = None
    span_name: str | None = None
    adaptive: Adaptive | None = None
    max_traces_per_second: float = 0.0
    timeout: float | None = None
    tags: tuple[tuple[str, str], ...] = ()
    protocol: str = "http1"  # one of PROTOCOLS; check_protocol() holds it to its upstream


class Matchable(Protocol):
    """What the table matches on; `Route` has it, and so does whatever the gateway builds around a route."""

    @property
    def host(self) -> str | None: ...

    @property
    def path_prefix(self) -> str: ...


RouteT = TypeVar("RouteT", bound=Matchable)
_Candidate = tuple[str, str, RouteT]  # (prefix without trailing '/', the same with '/', route)


class RouteFileError(ValueError):
    """A route file that cannot be used; the message is one line naming the file, the line and the entry."""


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
    """Read and validate a route file; every problem raises RouteFileError naming the file, line and entry."""
    return parse_routes(read_route_file(path), path)


def read_route_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RouteFileError(f"{path}: cannot read route file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RouteFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def parse_routes(text: str, source: Path | str) -> list[Route]:
    """Validate the text of a route file; ``source`` names it in errors (``routes.yaml:7: routes[2]...``)."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise RouteFileError(f"{source}{_yaml_problem(exc, text)}") from None
    except RecursionError:
        raise RouteFileError(f"{source}: invalid YAML: nested too deeply") from None
    try:
        return _parse_document(document)
    except _EntryError as exc:
        where = f"{source}:{exc.line}" if exc.line else str(source)
        raise RouteFileError(f"{where}: {exc}") from None


def check_protocol(protocol: str, upstream: Upstream) -> str:
    """``protocol`` if it is one of PROTOCOLS and fits the upstream's scheme; raises ValueError otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"must be one of {', '.join(PROTOCOLS)} (got {protocol!r})")
    if protocol == "h2c" and upstream.scheme != "http":
        # h2c is HTTP/2 in cleartext with prior knowledge (RFC 9113 3.3); TLS upstreams would negotiate by ALPN.
        raise ValueError(f"h2c needs an http:// upstream (got {upstream.scheme}://)")
    return protocol


def render_span_name(template: str, method: str, path: str) -> str:
    """A span name from a route's ``span_name`` template (checked when the file was loaded)."""
    return template.format(method=method, path=path)


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


# --- the file's document ----------------------------------------------------------------------------------------


class _EntryError(Exception):
    """A problem in the document, located like `routes[2].sample_rate: ...` on a line (0: no line to name)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers the line of each of its keys."""

    line = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class _Sequence(list[Any]):
    """A YAML sequence that remembers the line of each of its items."""

    line = 0
    item_lines: list[int]


def _parse_document(document: Any) -> list[Route]:
    if not isinstance(document, dict):
        raise _EntryError(f"expected a mapping with a 'routes' list at the top level (got {_kind(document)})")
    unknown = sorted(str(key) for key in document if key != "routes")
    if unknown:
        raise _EntryError(f"unknown top-level key {unknown[0]!r} (allowed: routes)", _line_of(document, unknown[0]))
    entries = document.get("routes")
    if not isinstance(entries, list):
        raise _EntryError(f"routes: must be a list of routes (got {_kind(entries)})", _line_of(document, "routes"))
    if not entries:
        raise _EntryError("routes: must list at least one route", _line_of(document, "routes"))
    lines = entries.item_lines if isinstance(entries, _Sequence) else [0] * len(entries)
    routes = [_parse_entry(entry, f"routes[{index}]", lines[index]) for index, entry in enumerate(entries)]
    _check_unique(routes, [_Fields(entry, "", lines[index]) for index, entry in enumerate(entries)])
    return routes


def _parse_entry(entry: Any, where: str, line: int) -> Route:
    if not isinstance(entry, dict):
        raise _EntryError(f"{where}: must be a mapping (got {_kind(entry)})", line)
    fields = _Fields(entry, where, line)
    if unknown := fields.unknown_keys(ROUTE_KEYS):
        raise unknown
    if "upstream" not in entry:
        raise _EntryError(f"{where}.upstream: is required", line)
    host = _host(fields, "host")
    path_prefix = _path_prefix(fields, "path_prefix")
    return Route(
        name=_name(fields, host, path_prefix),
        upstream=_upstream(fields, "upstream"),
        host=host,
        path_prefix=path_prefix,
        sample_rate=_rate(fields, "sample_rate"),
        span_name=_span_name(fields, "span_name"),
        adaptive=_adaptive(fields, "adaptive"),
        max_traces_per_second=_number(fields, "max_traces_per_second", minimum=0.0) or 0.0,
        timeout=_timeout(fields, "timeout"),
        tags=_tags(fields, "tags"),
        protocol=_protocol(fields, "protocol"),
    )


class _Fields:
    """The keys of one mapping in the file, with where each is, for error messages."""

    def __init__(self, mapping: dict[Any, Any], where: str, line: int) -> None:
        self.mapping = mapping
        self.where = where
        self.line = line

    def get(self, key: str, default: Any = None) -> Any:
        return self.mapping.get(key, default)

    def line_of(self, key: Any) -> int:
        return self.mapping.line_of(key) if isinstance(self.mapping, _Mapping) else self.line

    def error(self, key: str, message: str) -> _EntryError:
        return _EntryError(f"{self.where}.{key}: {message}", self.line_of(key))

    def unknown_keys(self, allowed: Sequence[str]) -> _EntryError | None:
        unknown = sorted(str(key) for key in self.mapping if key not in allowed)
        if not unknown:
            return None
        message = f"{self.where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        return _EntryError(message, self.line_of(unknown[0]))


def _name(fields: _Fields, host: str | None, path_prefix: str) -> str:
    value = fields.get("name")
    if value is None:
        return f"{host or ''}{path_prefix}"
    if not isinstance(value, str) or not value.strip():
        raise fields.error("name", f"must be a non-empty string (got {value!r})")
    return value


def _host(fields: _Fields, key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise fields.error(key, f"must be a string (got {value!r})")
    host = value.lower()
    if not (_HOST_NAME.fullmatch(host) or _IPV6_LITERAL.fullmatch(host)):
        raise fields.error(
            key,
            "must be a host name such as 'example.com' or '*.example.com',"
            f" without scheme, port or path (got {value!r})",
        )
    return host


def _path_prefix(fields: _Fields, key: str) -> str:
    value = fields.get(key, "/")
    if not isinstance(value, str):
        raise fields.error(key, f"must be a string (got {value!r})")
    if not value.startswith("/"):
        raise fields.error(key, f"must start with '/' (got {value!r})")
    if "?" in value or "#" in value:
        raise fields.error(key, f"must be a path, without '?' or '#' (got {value!r})")
    return value


def _upstream(fields: _Fields, key: str) -> Upstream:
    value = fields.get(key)
    if not isinstance(value, str):
        raise fields.error(key, f"must be a URL string (got {value!r})")
    try:
        return parse_upstream(value)
    except ValueError as exc:
        raise fields.error(key, str(exc)) from None


def _number(fields: _Fields, key: str, *, minimum: float, maximum: float | None = None) -> float | None:
    """A number within [minimum, maximum], or None when the key is absent."""
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fields.error(key, f"must be a number (got {value!r})")
    if maximum is not None and not minimum <= value <= maximum:
        raise fields.error(key, f"must be within [{minimum}, {maximum}] (got {value!r})")
    if not value >= minimum:  # also catches nan
        raise fields.error(key, f"must be {minimum} or more (got {value!r})")
    if value == float("inf"):
        raise fields.error(key, f"must be a finite number (got {value!r})")
    return float(value)


def _rate(fields: _Fields, key: str) -> float | None:
    return _number(fields, key, minimum=0.0, maximum=1.0)


def _timeout(fields: _Fields, key: str) -> float | None:
    timeout = _number(fields, key, minimum=0.0, maximum=MAX_TIMEOUT)
    if timeout == 0.0:
        raise fields.error(key, "must be more than 0 seconds (got 0)")
    return timeout


def _protocol(fields: _Fields, key: str) -> str:
    value = fields.get(key, "http1")
    if not isinstance(value, str):
        raise fields.error(key, f"must be one of {', '.join(PROTOCOLS)} (got {value!r})")
    try:
        return check_protocol(value, _upstream(fields, "upstream"))
    except ValueError as exc:
        raise fields.error(key, str(exc)) from None


def _span_name(fields: _Fields, key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise fields.error(key, f"must be a non-empty string (got {value!r})")
    allowed = ", ".join(f"{{{name}}}" for name in SPAN_NAME_FIELDS)
    try:
        parsed = list(_FORMATTER.parse(value))
    except ValueError as exc:
        raise fields.error(key, f"{exc}; write a literal brace as {{{{ or }}}} (got {value!r})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in SPAN_NAME_FIELDS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise fields.error(key, f"unknown placeholder {shown} (allowed: {allowed}) in {value!r}")
    return value


def _adaptive(fields: _Fields, key: str) -> Adaptive | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fields.error(key, f"must be a mapping with target_traces_per_second (got {_kind(value)})")
    where = f"{fields.where}.{key}"
    inner = _Fields(value, where, fields.line_of(key))
    if unknown := inner.unknown_keys(ADAPTIVE_KEYS):
        raise unknown
    target = _number(inner, "target_traces_per_second", minimum=0.0)
    if target is None:
        raise _EntryError(f"{where}.target_traces_per_second: is required", inner.line)
    if target == 0.0:
        raise inner.error("target_traces_per_second", "must be more than 0 (got 0)")
    floor = _number(inner, "min_sample_rate", minimum=0.0, maximum=1.0)
    interval = _number(inner, "interval", minimum=MIN_ADAPTIVE_INTERVAL, maximum=MAX_TIMEOUT)
    return Adaptive(
        target_traces_per_second=target,
        min_sample_rate=DEFAULT_MIN_SAMPLE_RATE if floor is None else floor,
        interval=DEFAULT_ADAPTIVE_INTERVAL if interval is None else interval,
    )


def _tags(fields: _Fields, key: str) -> tuple[tuple[str, str], ...]:
    value = fields.get(key)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise fields.error(key, f"must be a mapping of tag names to values (got {_kind(value)})")
    tags = _Fields(value, f"{fields.where}.{key}", fields.line_of(key))
    pairs = []
    for name, tag_value in value.items():
        if not isinstance(name, str) or not name.strip():
            raise fields.error(key, f"tag names must be non-empty strings (got {name!r})")
        if name in RESERVED_TAGS:
            reserved = ", ".join(sorted(RESERVED_TAGS))
            raise tags.error(name, f"is set by the gateway itself (reserved: {reserved})")
        if name == TRACESTATE_TAG:
            raise tags.error(name, "is set by the gateway itself (the trace's W3C tracestate)")
        if isinstance(tag_value, bool):
            pairs.append((name, "true" if tag_value else "false"))
        elif isinstance(tag_value, str | int | float):
            pairs.append((name, str(tag_value)))
        else:
            raise tags.error(name, f"must be a string, number or boolean (got {_kind(tag_value)})")
    return tuple(pairs)


def _check_unique(routes: list[Route], entries: list[_Fields]) -> None:
    names: dict[str, int] = {}
    matches: dict[tuple[str | None, str], int] = {}
    for index, route in enumerate(routes):
        # '/api' and '/api/' select the same requests, so they are one prefix.
        match = (route.host, route.path_prefix.rstrip("/"))
        if match in matches:
            raise _EntryError(
                f"routes[{index}]: same host and path_prefix as routes[{matches[match]}]",
                entries[index].line_of("path_prefix"),
            )
        if route.name in names:
            raise _EntryError(
                f"routes[{index}].name: {route.name!r} is already used by routes[{names[route.name]}]",
                entries[index].line_of("name"),
            )
        matches[match] = names[route.name] = index


def _line_of(mapping: dict[Any, Any], key: Any) -> int:
    return mapping.line_of(key) if isinstance(mapping, _Mapping) else 0


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    for kind, name in _KINDS.items():
        if type(value) is kind or (kind in (list, dict) and isinstance(value, kind)):
            return name
    return f"a {type(value).__name__}"


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem
        # A 'while parsing ...' context only says where PyYAML was; another context is the first half of the
        # sentence ("expected a single document in the stream", "but found another document").
        if exc.context and not exc.context.startswith("while "):
            problem = f"{exc.context}, {problem}"
        return f":{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return f":{line}:{column}: invalid YAML: {exc.reason} (#x{exc.character:04x})"
    return ": invalid YAML: " + " ".join(str(exc).split())


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, where PyYAML silently keeps the last, and
    remembers the line of every key and item so that errors can name it."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> _Mapping:
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
    mapping = _Mapping(loader.construct_mapping(node))
    mapping.line = node.start_mark.line + 1
    # construct_mapping has flattened merge keys into node.value, merged ones first, so explicit keys win here too.
    mapping.key_lines = {
        key: key_node.start_mark.line + 1
        for key_node, _ in node.value
        if _hashable(key := loader.construct_object(key_node))
    }
    return mapping


def _construct_sequence(loader: _StrictLoader, node: yaml.SequenceNode) -> Iterator[_Sequence]:
    items = _Sequence()
    items.line = node.start_mark.line + 1
    items.item_lines = [item.start_mark.line + 1 for item in node.value]
    # Yielded empty and filled afterwards, as PyYAML's own construct_yaml_seq does, so that aliases can refer to it.
    yield items
    items.extend(loader.construct_sequence(node))


def _hashable(value: Any) -> bool:
    return isinstance(value, Hashable)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
