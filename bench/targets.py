"""Starting what the benchmark talks to: the nginx upstream, the span sink and each proxy under test.

The gateway runs with its default settings, as users run it (access log on, default propagation): the benchmark sets
only where it listens, what it proxies to, the sample rate and the span sink.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from plan import BODIES, CEILING, NGINX, UPSTREAM, Target
from services import LOOPBACK, Service, ServiceError, free_port, start
from span_sink import STATS_PATH

from gateway.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
GATEWAY_SCRIPT = Path(sys.executable).parent / "ingress-gateway"
SPANS_PATH = "/api/v2/spans"

_Config = Callable[[Path, int], str]  # (prefix, port) -> nginx.conf
GATEWAY_ENV_PREFIX = "GATEWAY_"

# Shared by both nginx configs. Debian's nginx has absolute compiled-in temp and log paths, so every
# one is set under the prefix; keepalive_requests is raised from 1000 so that no run reconnects midway.
NGINX_COMMON = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
{body}}}
"""

_UPSTREAM_SERVER = """\
    default_type text/plain;
    open_file_cache max=16;
    server {{
        listen {host}:{port};
        root {root};
    }}
"""

# The same keep-alive pooling the gateway gets: HTTP/1.1 to the upstream, no "Connection: close".
_PROXY_SERVER = """\
    upstream backend {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def upstream_config(prefix: Path, root: Path, port: int) -> str:
    body = _UPSTREAM_SERVER.format(host=LOOPBACK, port=port, root=root)
    return nginx_config(prefix, body)


def proxy_config(prefix: Path, upstream_port: int, port: int, workers: int = 1) -> str:
    body = _PROXY_SERVER.format(host=LOOPBACK, port=port, upstream=f"{LOOPBACK}:{upstream_port}")
    return nginx_config(prefix, body, workers)


def nginx_config(prefix: Path, body: str, workers: int = 1) -> str:
    """A whole nginx.conf around `body` (the `http` block's servers), everything kept under `prefix`."""
    return NGINX_COMMON.format(prefix=prefix, body=body, workers=workers)


def gateway_defaults() -> dict[str, object]:
    """The defaults of the settings the benchmark leaves alone that shape the hot path, as Settings has them."""
    fields = Settings.model_fields
    names = ("access_log", "log_level", "propagation", "upstream_client", "upstream_max_connections")
    return {name: _setting_text(fields[name].default) for name in names if name in fields}


def _setting_text(value: object) -> object:
    """As the variable would be written: `b3multi,b3`, not a list of enums."""
    if isinstance(value, list | tuple):
        return ",".join(str(_setting_text(item)) for item in value)
    return getattr(value, "value", value)


def gateway_env(
    base: Mapping[str, str], target: Target, *, port: int, upstream: str, sink: str, extra: Mapping[str, str]
) -> dict[str, str]:
    """The gateway's environment: only the benchmark's GATEWAY_ settings (and `extra`), none inherited; everything
    else at its default, the access log included."""
    env = {key: value for key, value in base.items() if not key.startswith(GATEWAY_ENV_PREFIX)}
    env.update(
        GATEWAY_HOST=LOOPBACK,
        GATEWAY_PORT=str(port),
        GATEWAY_ADMIN_PORT=str(free_port()),
        GATEWAY_WORKERS=str(target.workers),
        GATEWAY_UPSTREAM_URL=upstream,
        GATEWAY_SAMPLE_RATE=str(target.sample_rate),
        GATEWAY_ZIPKIN_URL=sink + SPANS_PATH,
    )
    env.update(extra)
    return env


def start_upstream(stack: ExitStack, workdir: Path, cpus: Sequence[int]) -> Service:
    root = workdir / "www"
    root.mkdir()
    for body in BODIES:
        (root / body.path.lstrip("/")).write_bytes(body.content)
    # nginx started by root serves files as "nobody": the temporary directory must be readable.
    for path in (workdir, root, *root.iterdir()):
        path.chmod(0o755)
    return start_nginx(stack, UPSTREAM, workdir, cpus, lambda prefix, port: upstream_config(prefix, root, port))


def start_sink(stack: ExitStack, workdir: Path, cpus: Sequence[int]) -> Service:
    port = free_port()
    args = [sys.executable, str(BENCH_DIR / "span_sink.py"), str(port)]
    return start(stack, "span-sink", args, cpus=cpus, port=port, log_dir=workdir)


def sink_stats(sink: Service) -> dict[str, int]:
    """The span sink's counters (``GET /stats``): spans, POSTs, POSTs parsed in full, rejected, bytes."""
    connection = http.client.HTTPConnection(LOOPBACK, sink.port, timeout=5.0)
    try:
        connection.request("GET", STATS_PATH)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise ServiceError(f"span sink answered {response.status} to GET {STATS_PATH}")
    stats: dict[str, int] = json.loads(body)
    return stats


def start_target(
    stack: ExitStack,
    target: Target,
    *,
    workdir: Path,
    cpus: Sequence[int],
    upstream: Service,
    sink: Service,
    gateway_extra: Mapping[str, str],
) -> Service:
    """Start `target` (the upstream is already running); ServiceError says why it is not available."""
    if target.name == UPSTREAM:
        return upstream
    if not target.is_gateway and target.name.startswith(NGINX):
        return start_nginx(
            stack,
            target.name,
            workdir,
            cpus,
            lambda prefix, port: proxy_config(prefix, upstream.port, port, target.workers),
        )
    port = free_port()
    if target.name == CEILING:
        connections = str(Settings.model_fields["upstream_max_connections"].default)
        args = [sys.executable, str(BENCH_DIR / "ceiling_proxy.py"), upstream.url, str(port), connections]
        return start(stack, CEILING, args, cpus=cpus, port=port, log_dir=workdir)
    if target.is_gateway:
        if not GATEWAY_SCRIPT.exists():
            raise ServiceError(f"{GATEWAY_SCRIPT} is not installed")
        env = gateway_env(os.environ, target, port=port, upstream=upstream.url, sink=sink.url, extra=gateway_extra)
        # Its working directory is the temporary one, where no developer's .env can change its settings.
        cwd = workdir / target.name
        cwd.mkdir()
        return start(stack, target.name, [str(GATEWAY_SCRIPT)], cpus=cpus, port=port, log_dir=workdir, env=env, cwd=cwd)
    raise ValueError(f"unknown target {target.name!r}")


def start_nginx(
    stack: ExitStack, name: str, workdir: Path, cpus: Sequence[int], config: _Config, port: int | None = None
) -> Service:
    """nginx with the configuration `config(prefix, port)` gives, on `port` (a free one if None)."""
    prefix = workdir / name
    prefix.mkdir()
    port = port or free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix, port))
    # -e: errors before the configuration is read go to the service's log too, not to /var/log/nginx.
    args = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
    return start(stack, name, args, cpus=cpus, port=port, log_dir=workdir)
