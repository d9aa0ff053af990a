"""The route file's schema: what each key may hold, as pydantic models, and the `Route` values they become.

The models are strict (a quoted '0.5' is not a number, `true` is not 1) and refuse unknown keys. Each key that
must hold something a type cannot say carries an `Expect`, which the route file's errors read: `upstream: 8080`
is "must be a URL string (got 8080)", not pydantic's "Input should be a valid string".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from gateway.routes import (
    DEFAULT_ADAPTIVE_INTERVAL,
    DEFAULT_MIN_SAMPLE_RATE,
    MAX_TIMEOUT,
    MIN_ADAPTIVE_INTERVAL,
    PROTOCOLS,
    RESERVED_TAGS,
    TRACESTATE_TAG,
    Adaptive,
    Route,
    check_host,
    check_path_prefix,
    check_protocol,
    check_span_name,
    parse_upstream,
)

# The error type of a problem with a mapping's key itself (a tag name that is not a string), which is reported on
# the mapping that holds it.
KEY_NAME_ERROR = "key_name"
# How error messages name what a YAML value turned out to be.
_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}

Location = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Expect:
    """What a key must hold, as its errors say it: ``Expect("a URL string")`` gives "must be a URL string"."""

    what: str


def kind(value: Any) -> str:
    """What a YAML value is, in the words of the file's errors: 'a list', 'a number', 'nothing'..."""
    if value is None:
        return "nothing"
    for python_type, name in _KINDS.items():
        if type(value) is python_type or (python_type in (list, dict) and isinstance(value, python_type)):
            return name
    return f"a {type(value).__name__}"


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"must be a non-empty string (got {value!r})")
    return value


def _upstream_url(url: str) -> str:
    parse_upstream(url)  # raises ValueError, with what is wrong
    return url


def _more_than_zero(value: float) -> float:
    if value == 0.0:
        raise ValueError("must be more than 0 (got 0)")
    return value


def _tag_name(name: Any) -> Any:
    if not isinstance(name, str) or not name.strip():
        raise PydanticCustomError(
            KEY_NAME_ERROR, "tag names must be non-empty strings (got {name})", {"name": repr(name)}
        )
    if name in RESERVED_TAGS:
        raise ValueError(f"is set by the gateway itself (reserved: {', '.join(sorted(RESERVED_TAGS))})")
    if name == TRACESTATE_TAG:
        raise ValueError("is set by the gateway itself (the trace's W3C tracestate)")
    return name


def _tag_text(value: Any) -> Any:
    # Span tags are strings on the wire; a boolean is written as YAML and JSON write it.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"must be a string, number or boolean (got {kind(value)})")


NonBlank = Annotated[str, AfterValidator(_non_blank)]
SpanTemplate = Annotated[str, AfterValidator(_non_blank), AfterValidator(check_span_name)]
# Bounds go on the optional type as a whole, where the file's errors find them to say "within [0.0, 1.0]".
OptionalRate = Annotated[float | None, Field(ge=0.0, le=1.0)]
TagName = Annotated[str, BeforeValidator(_tag_name)]
TagText = Annotated[str, BeforeValidator(_tag_text)]


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AdaptiveEntry(_FileModel):
    target_traces_per_second: Annotated[float, Field(ge=0.0, allow_inf_nan=False), AfterValidator(_more_than_zero)]
    min_sample_rate: OptionalRate = None
    interval: Annotated[float | None, Field(ge=MIN_ADAPTIVE_INTERVAL, le=MAX_TIMEOUT)] = None


class RouteEntry(_FileModel):
    """One entry of ``routes``; ``upstream`` must come before ``protocol``, which is checked against it."""

    name: Annotated[NonBlank | None, Expect("a non-empty string")] = None
    host: Annotated[str, AfterValidator(check_host)] | None = None
    path_prefix: Annotated[str, AfterValidator(check_path_prefix)] = "/"
    upstream: Annotated[str, Expect("a URL string"), AfterValidator(_upstream_url)]
    span_name: Annotated[SpanTemplate | None, Expect("a non-empty string")] = None
    sample_rate: OptionalRate = None
    adaptive: Annotated[AdaptiveEntry | None, Expect("a mapping with target_traces_per_second")] = None
    max_traces_per_second: Annotated[float | None, Field(ge=0.0, allow_inf_nan=False)] = None
    timeout: Annotated[float | None, Field(ge=0.0, le=MAX_TIMEOUT)] = None
    tags: Annotated[dict[TagName, TagText] | None, Expect("a mapping of tag names to values")] = None
    protocol: Annotated[str, Expect(f"one of {', '.join(PROTOCOLS)}")] = "http1"

    @field_validator("timeout")
    @classmethod
    def _timeout_not_zero(cls, timeout: float | None) -> float | None:
        if timeout == 0.0:
            raise ValueError("must be more than 0 seconds (got 0)")
        return timeout

    @field_validator("protocol")
    @classmethod
    def _protocol_fits_upstream(cls, protocol: str, info: ValidationInfo) -> str:
        upstream = info.data.get("upstream")
        if upstream is None:
            return (
                protocol  # the upstream is wrong, and its own error says so; the protocol is checked once it is right
            )
        return check_protocol(protocol, parse_upstream(upstream))

    def to_route(self) -> Route:
        return Route(
            name=self.name if self.name is not None else f"{self.host or ''}{self.path_prefix}",
            upstream=parse_upstream(self.upstream),
            host=self.host,
            path_prefix=self.path_prefix,
            sample_rate=self.sample_rate,
            span_name=self.span_name,
            adaptive=_adaptive(self.adaptive),
            max_traces_per_second=self.max_traces_per_second or 0.0,
            timeout=self.timeout,
            tags=tuple(self.tags.items()) if self.tags else (),
            protocol=self.protocol,
        )


def _routes_listed(entries: list[RouteEntry]) -> list[RouteEntry]:
    if not entries:
        raise ValueError("must list at least one route")
    return entries


class RouteFile(_FileModel):
    routes: Annotated[list[RouteEntry], Expect("a list of routes"), AfterValidator(_routes_listed)]


ROUTE_KEYS = tuple(RouteEntry.model_fields)
ADAPTIVE_KEYS = tuple(AdaptiveEntry.model_fields)


def find_conflict(routes: list[Route]) -> tuple[Location, str] | None:
    """Two routes that select the same requests, or share a name: the later one's key, and what is wrong."""
    names: dict[str, int] = {}
    matches: dict[tuple[str | None, str], int] = {}
    for index, route in enumerate(routes):
        # '/api' and '/api/' select the same requests, so they are one prefix.
        match = (route.host, route.path_prefix.rstrip("/"))
        if match in matches:
            return (
                "routes",
                index,
                "path_prefix",
            ), f"routes[{index}]: same host and path_prefix as routes[{matches[match]}]"
        if route.name in names:
            message = f"routes[{index}].name: {route.name!r} is already used by routes[{names[route.name]}]"
            return ("routes", index, "name"), message
        matches[match] = names[route.name] = index
    return None


def _adaptive(entry: AdaptiveEntry | None) -> Adaptive | None:
    if entry is None:
        return None
    return Adaptive(
        target_traces_per_second=entry.target_traces_per_second,
        min_sample_rate=DEFAULT_MIN_SAMPLE_RATE if entry.min_sample_rate is None else entry.min_sample_rate,
        interval=DEFAULT_ADAPTIVE_INTERVAL if entry.interval is None else entry.interval,
    )
