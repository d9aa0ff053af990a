"""`ingress-gateway check`: every problem of a configuration at once, as `nginx -t` does, before a pod sees it.

The settings and the route file are loaded by the very functions serving uses. Further checks plug in through
`CHECKS`: each takes the valid `Settings` and returns its problems, one line each, naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.environment import environment_warnings, gateway_variables
from gateway.masking import mask_header_values, mask_url
from gateway.reload import LoadedRoutes
from gateway.route_file import RouteFileError
from gateway.routes import Route
from gateway.settings import EXPORTER_URLS, Settings, describe, env_name, exporters, has_exporter
from gateway.tls_checks import tls_configured, tls_problems

Check = Callable[[Settings], list[str]]


@dataclass
class Report:
    settings: Settings | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_routes(settings: Settings) -> tuple[LoadedRoutes | None, Route | None]:
    """The route file and the fallback route, exactly as the gateway loads them (raises RouteFileError)."""
    from gateway.worker_routes import load_route_config

    return load_route_config(settings)


def route_problems(settings: Settings) -> list[str]:
    try:
        load_routes(settings)
    except (RouteFileError, ValueError) as exc:
        return [f"GATEWAY_ROUTES_FILE: {exc}"]
    return []


# Each branch that adds a kind of check (TLS files, ...) appends its function here.
CHECKS: list[Check] = [route_problems, tls_problems]


def known_variables() -> set[str]:
    return {env_name(name) for name in Settings.model_fields}


def settings_env_file() -> Path | None:
    env_file = Settings.model_config.get("env_file")
    return Path(env_file) if isinstance(env_file, str | os.PathLike) else None


def check(checks: list[Check] | None = None) -> Report:
    """Load the settings from the environment (and .env) as serving does, and run every check on them."""
    variables = gateway_variables(os.environ, settings_env_file())
    report = Report(None, warnings=environment_warnings(variables, known_variables()))
    try:
        report.settings = Settings()
    except ValidationError as exc:
        report.problems.extend(describe(error) for error in exc.errors())
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        routes_file = variables.get(env_name("routes_file"))
        if routes_file and "routes_file" not in bad:
            # The route file is still worth reading: a CI run should show all that is wrong at once.
            report.problems.extend(route_problems(Settings.model_construct(routes_file=Path(routes_file))))
        return report
    for run in checks if checks is not None else CHECKS:
        report.problems.extend(run(report.settings))
    if not has_exporter(report.settings):
        report.warnings.append(NO_EXPORTER_WARNING)
    return report


NO_EXPORTER_WARNING = (
    "no span exporter configured: no new trace is sampled (X-B3-Sampled: 0, reason no_exporter); "
    f"set {' or '.join(env_name(name) for name in EXPORTER_URLS)} to turn tracing on"
)


def effective_configuration(settings: Settings) -> list[str]:
    """Every setting in force as `GATEWAY_NAME=value`, secrets masked: a .env file one could deploy."""
    return [f"{env_name(name)}={shown_value(name, getattr(settings, name))}" for name in Settings.model_fields]


def shown_value(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    text = str(value)
    if name.endswith("_headers") or _is_secret(name):
        return mask_header_values(text)
    return mask_url(text)


def in_force(settings: Settings, loaded: LoadedRoutes | None, default: Route | None) -> dict[str, Any]:
    """What the startup line says is in force: listeners, protocols, upstreams, rate, exporters, trust."""
    routes = [*(loaded.routes if loaded is not None else []), *([default] if default is not None else [])]
    return {
        "listeners": {
            "proxy": f"{settings.host}:{settings.port}",
            "admin": f"{settings.host}:{settings.admin_port}" if settings.admin_port else None,
            "redirect": f"{settings.host}:{settings.http_redirect_port}" if settings.http_redirect_port else None,
        },
        "protocols": _client_protocols(settings),
        "upstream_protocols": {route.name: route.protocol for route in routes},
        "workers": settings.workers,
        "upstreams": {route.name: route.upstream.url for route in routes},
        "routes_file": str(settings.routes_file) if settings.routes_file is not None else None,
        "sample_rate": settings.sample_rate,
        "max_traces_per_second": settings.max_traces_per_second,
        "exporters": _exporters(settings),
        "propagation": [str(item) for item in settings.propagation],
        "trust": {
            "all_clients": settings.trust_incoming_trace,
            "trusted_cidrs": [str(network) for network in settings.trusted_cidrs],
        },
    }


def _client_protocols(settings: Settings) -> list[str]:
    """What clients may speak on the proxy port: TLS with ALPN, else cleartext HTTP/1.1 and h2c; WebSocket on either."""
    if tls_configured(settings):
        return ["h2 (TLS)", "http/1.1 (TLS)", "websocket (TLS)"]
    return ["http/1.1", "h2c", "websocket"]


def _exporters(settings: Settings) -> dict[str, str]:
    return {name: mask_url(url) for name, url in exporters(settings).items()}


def _is_secret(name: str) -> bool:
    extra = Settings.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and extra.get("secret") is True
