"""Which spans make a sampled trace whole, per endpoint, from a small YAML file (loadtest/expectations.yaml).

    gateway_service: ingress-gateway      # the gateway's GATEWAY_SERVICE_NAME; `gateway` below stands for it
    default: [gateway SERVER, gateway CLIENT]
    endpoints:
      /api/list:
        - gateway SERVER
        - gateway CLIENT
        - web SERVER
        - web CLIENT -> emoji             # web's call to emoji: remoteEndpoint.serviceName is emoji
        - emoji SERVER

Each entry is `SERVICE [KIND] [-> REMOTE SERVICE]`; listing one twice asks for two such spans. A trace may hold more
spans than listed (a mesh's proxies add their own), never fewer. An endpoint the file does not name takes `default`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_GATEWAY_SERVICE = "ingress-gateway"
DEFAULT_FILE = Path(__file__).with_name("expectations.yaml")
GATEWAY_ALIAS = "gateway"
SERVER = "SERVER"
KINDS = ("SERVER", "CLIENT", "PRODUCER", "CONSUMER")
TOP_LEVEL_KEYS = ("gateway_service", "default", "endpoints")

_SERVICE = r"[A-Za-z0-9_.:-]+"
_ENTRY = re.compile(rf"\s*({_SERVICE})(?:\s+([A-Za-z]+))?(?:\s*->\s*({_SERVICE}))?\s*")


class ExpectationsError(ValueError):
    """An expectations file that cannot be used; the message is one line naming the file and the entry."""


@dataclass(frozen=True, slots=True)
class SpanPattern:
    """One span a trace must hold: its service, and optionally its kind and the service it calls (lowercased, as
    Zipkin stores names)."""

    service: str
    kind: str | None = None
    remote: str | None = None

    def matches(self, service: str | None, kind: str | None, remote: str | None) -> bool:
        return (
            service == self.service
            and (self.kind is None or kind == self.kind)
            and (self.remote is None or remote == self.remote)
        )

    def describe(self) -> str:
        text = " ".join(part for part in (self.service, self.kind) if part)
        return f"{text} -> {self.remote}" if self.remote else text

    @property
    def specificity(self) -> int:
        return (self.kind is not None) + (self.remote is not None)


@dataclass(frozen=True, slots=True)
class Expectations:
    """Whose spans make a trace whole: the gateway's service name (its SERVER span is every trace's root) and the
    spans each endpoint's trace holds."""

    gateway_service: str = DEFAULT_GATEWAY_SERVICE
    endpoints: Mapping[str, tuple[SpanPattern, ...]] = field(default_factory=dict)
    default: tuple[SpanPattern, ...] | None = None

    def spans_for(self, endpoint: str | None) -> tuple[SpanPattern, ...]:
        found = self.endpoints.get(endpoint or "")
        if found is not None:
            return found
        if self.default is not None:
            return self.default
        gateway = self.gateway_service.lower()
        return (SpanPattern(gateway, SERVER), SpanPattern(gateway, "CLIENT"))

    def is_gateway_root(self, service: str | None, kind: str | None) -> bool:
        return kind == SERVER and service == self.gateway_service.lower()


def missing_spans(
    patterns: Sequence[SpanPattern], spans: Iterable[tuple[str | None, str | None, str | None]]
) -> list[str]:
    """The descriptions of the patterns no span satisfies, given spans as (service, kind, remote); each span counts
    for one pattern, the most specific patterns being served first."""
    unused = list(spans)
    missing: list[str] = []
    for pattern in sorted(patterns, key=lambda each: each.specificity, reverse=True):
        for index, (service, kind, remote) in enumerate(unused):
            if pattern.matches(service, kind, remote):
                del unused[index]
                break
        else:
            missing.append(pattern.describe())
    # In file order, whatever order they were served in.
    order = {pattern.describe(): index for index, pattern in enumerate(patterns)}
    return sorted(missing, key=lambda text: order[text])


def load_expectations(path: Path, gateway_service: str | None = None) -> Expectations:
    """Reads an expectations file; `gateway_service` (the locustfile's --trace-gateway-service) overrides the
    file's. Every problem raises ExpectationsError naming the file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExpectationsError(f"{path}: cannot read expectations: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ExpectationsError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    try:
        return parse_expectations(document, gateway_service)
    except ValueError as exc:
        raise ExpectationsError(f"{path}: {exc}") from None


def parse_expectations(document: Any, gateway_service: str | None = None) -> Expectations:
    """Raises ValueError locating the first problem, e.g. `endpoints./api/list[2]: ...`."""
    if not isinstance(document, dict):
        raise ValueError("expected a mapping with 'endpoints' at the top level")
    unknown = sorted(str(key) for key in document if key not in TOP_LEVEL_KEYS)
    if unknown:
        raise ValueError(f"unknown top-level key {unknown[0]!r} (allowed: {', '.join(TOP_LEVEL_KEYS)})")
    named = document.get("gateway_service", DEFAULT_GATEWAY_SERVICE)
    if not isinstance(named, str) or not named.strip():
        raise ValueError(f"gateway_service: must be a service name (got {named!r})")
    gateway = (gateway_service or named).strip().lower()
    endpoints = document.get("endpoints") or {}
    if not isinstance(endpoints, dict):
        raise ValueError("endpoints: must map each endpoint (a path) to its list of spans")
    parsed: dict[str, tuple[SpanPattern, ...]] = {}
    for endpoint, entries in endpoints.items():
        if not isinstance(endpoint, str) or not endpoint.startswith("/"):
            raise ValueError(f"endpoints: {endpoint!r} is not a path starting with '/'")
        parsed[endpoint] = _patterns(entries, f"endpoints.{endpoint}", gateway)
    default = document.get("default")
    return Expectations(
        gateway_service=gateway,
        endpoints=parsed,
        default=None if default is None else _patterns(default, "default", gateway),
    )


def parse_pattern(text: str, gateway_service: str = DEFAULT_GATEWAY_SERVICE) -> SpanPattern:
    """`web CLIENT -> emoji` -> SpanPattern("web", "CLIENT", "emoji"); `gateway` names the gateway's service."""
    match = _ENTRY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not SERVICE [KIND] [-> REMOTE SERVICE]")
    service, kind, remote = match[1].lower(), match[2], match[3]
    if kind is not None and kind.upper() not in KINDS:
        raise ValueError(f"{text!r}: the kind must be one of {', '.join(KINDS)}")

    def named(name: str) -> str:
        return gateway_service.lower() if name.lower() == GATEWAY_ALIAS else name.lower()

    return SpanPattern(named(service), kind.upper() if kind else None, named(remote) if remote else None)


def _patterns(entries: Any, where: str, gateway: str) -> tuple[SpanPattern, ...]:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: must be a non-empty list of spans such as 'web CLIENT -> emoji'")
    patterns = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ValueError(f"{where}[{index}]: must be a string such as 'web SERVER' (got {entry!r})")
        try:
            patterns.append(parse_pattern(entry, gateway))
        except ValueError as exc:
            raise ValueError(f"{where}[{index}]: {exc}") from None
    return tuple(patterns)
