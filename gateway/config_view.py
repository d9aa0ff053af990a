"""What `GET /config` on the admin listener shows: the route table in force, with nothing secret in it.

Each worker describes its own table (`worker_view`); the admin listener merges the workers' views (`merge_views`)
into one document, which says whether every worker serves the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.otlp import parse_key_values
from gateway.routing import ActiveRoute, Routing
from gateway.settings import Settings

REDACTED = "***"
View = dict[str, Any]


def redact_url(url: str) -> str:
    """``url`` without secrets: credentials and query values become ``***``; an unparsable URL is hidden whole."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        query = urlencode([(key, REDACTED) for key, _ in parse_qsl(query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def worker_view(routing: Routing, settings: Settings, pid: int, last_reload: View | None) -> View:
    """One worker's table in force, and the gateway-wide settings that shape it, as JSON-ready values."""
    source = routing.source
    return {
        "pid": pid,
        "routes_file": str(source.path) if source is not None else None,
        "version": source.digest if source is not None else None,
        "loaded_at": _timestamp(source.loaded_at) if source is not None else None,
        "last_reload": last_reload,
        "settings": {
            "sample_rate": settings.sample_rate,
            "max_traces_per_second": settings.max_traces_per_second,
            "upstream_timeout": settings.upstream_timeout,
            "upstream_protocol": settings.upstream_protocol,
            "no_route_status": settings.no_route_status,
            "propagation": [str(name) for name in settings.propagation],
            "routes_reload_interval": settings.routes_reload_interval,
            "zipkin_url": redact_url(settings.zipkin_url) or None,
            "otlp_url": redact_url(settings.otlp_url) or None,
            # The names only: the values are often API keys.
            "otlp_headers": [name for name, _ in parse_key_values(settings.otlp_headers.get_secret_value())],
        },
        "routes": [_route_view(route, settings) for route in routing.routes],
        "default_route": _route_view(routing.default, settings) if routing.default is not None else None,
    }


def merge_views(views: Sequence[View]) -> View:
    """One document for every worker's view: the table most workers serve (the newest on a tie), whether all
    serve it (``consistent``: false only while a reload is reaching them), and each worker's version.

    An adaptive route's current rate is not here: it changes every interval, in each worker apart; the
    `gateway_route_sample_rate` gauge shows it.
    """
    if not views:
        return {"consistent": False, "workers": [], "routes": None, "default_route": None}
    groups: dict[str, list[View]] = {}
    for view in views:
        # The settings are the same in every worker, so the file's digest tells the tables apart.
        groups.setdefault(str(view["version"]), []).append(view)
    chosen = max(groups.values(), key=lambda group: (len(group), max(view["loaded_at"] or "" for view in group)))[0]
    workers = [
        {
            "pid": view["pid"],
            "version": view["version"],
            "loaded_at": view["loaded_at"],
            "last_reload": view["last_reload"],
        }
        for view in sorted(views, key=lambda view: int(view["pid"]))
    ]
    merged = {key: value for key, value in chosen.items() if key not in ("pid", "last_reload")}
    return {**merged, "consistent": len(groups) == 1, "workers": workers}


def reload_record(at: float, trigger: str, outcome: str, reason: str | None, version: str | None) -> View:
    return {"at": _timestamp(at), "trigger": trigger, "outcome": outcome, "reason": reason, "version": version}


def _route_view(active: ActiveRoute, settings: Settings) -> View:
    route = active.route
    adaptive = None
    if route.adaptive is not None:
        adaptive = {
            "target_traces_per_second": route.adaptive.target_traces_per_second,
            "min_sample_rate": route.adaptive.min_sample_rate,
            "interval": route.adaptive.interval,
        }
    default_span_name = "{method} {path}" if active.is_default else f"{{method}} {route.name}"
    return {
        "name": route.name,
        "host": route.host,
        "path_prefix": route.path_prefix,
        "upstream": redact_url(route.upstream.url),
        "span_name": route.span_name if route.span_name is not None else default_span_name,
        "sample_rate": route.sample_rate if route.sample_rate is not None else settings.sample_rate,
        "adaptive": adaptive,
        "max_traces_per_second": route.max_traces_per_second,
        "timeout": route.timeout if route.timeout is not None else settings.upstream_timeout,
        "tags": dict(route.tags),
        "protocol": route.protocol,
    }


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
