"""What `bench/protocols.py` talks to: nginx on every protocol, a unary gRPC responder, certificates, and whether
the gateway speaks a protocol yet (a setting's presence, or a probe)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from services import LOOPBACK
from targets import nginx_config

from gateway.settings import Settings

GRPC_PATH = "/bench.Echo/Unary"
# A unary gRPC message on the wire: not compressed (0), its length (4 bytes, big-endian), then the protobuf bytes
# (field 1, a string, "hello").
GRPC_PAYLOAD = b"\x0a\x05hello"
GRPC_MESSAGE = b"\x00\x00\x00\x00\x07" + GRPC_PAYLOAD
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")

# One nginx, one worker, a server per protocol, each proxying to the upstream as the gateway does: HTTP/1.1 with
# a keep-alive pool for HTTP, h2c for gRPC, an upgraded connection per WebSocket. nginx 1.22 (Debian 12) has no
# `http2 on;`: `listen ... http2` is h2c with prior knowledge only, `listen ... ssl http2` offers h2 and http/1.1.
_PROXY_SERVERS = """\
    upstream backend {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    upstream grpc_backend {{
        server {grpc_upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    upstream ws_backend {{
        server {ws_upstream};
    }}
    server {{
        listen {host}:{h2c_port} http2;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen {host}:{tls_port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen {host}:{grpc_port} http2;
        location / {{
            grpc_pass grpc://grpc_backend;
        }}
    }}
    server {{
        listen {host}:{ws_port};
        location / {{
            proxy_pass http://ws_backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;
        }}
    }}
"""

# The unary gRPC upstream: a static answer over h2c, with the trailers gRPC needs. A POST to a static file is a
# 405 in nginx; `error_page 405 =200 $uri` serves the file instead.
_GRPC_RESPONDER = """\
    server {{
        listen {host}:{port} http2;
        root {root};
        default_type application/grpc;
        location / {{
            # The request body is read whole before answering (a mirror needs it): an answer sent while the body
            # still arrives makes nginx's grpc_pass see frames for a stream it has closed, and answer 502.
            mirror /read-the-body;
            add_trailer grpc-status 0;
            add_trailer grpc-message "";
            error_page 405 =200 $uri;
        }}
        location = /read-the-body {{
            internal;
            return 204;
        }}
    }}
"""


@dataclass(frozen=True, slots=True)
class ProxyPorts:
    h2c: int
    tls: int
    grpc: int
    ws: int


def proxy_config(
    prefix: Path, ports: ProxyPorts, *, upstream: int, grpc_upstream: int, ws_upstream: int, cert: Path, key: Path
) -> str:
    body = _PROXY_SERVERS.format(
        host=LOOPBACK,
        upstream=f"{LOOPBACK}:{upstream}",
        grpc_upstream=f"{LOOPBACK}:{grpc_upstream}",
        ws_upstream=f"{LOOPBACK}:{ws_upstream}",
        h2c_port=ports.h2c,
        tls_port=ports.tls,
        grpc_port=ports.grpc,
        ws_port=ports.ws,
        cert=cert,
        key=key,
    )
    return nginx_config(prefix, body)


def grpc_responder_config(prefix: Path, root: Path, port: int) -> str:
    return nginx_config(prefix, _GRPC_RESPONDER.format(host=LOOPBACK, port=port, root=root))


def write_grpc_files(workdir: Path) -> tuple[Path, Path]:
    """The responder's root (the answer at GRPC_PATH) and the request body h2load sends."""
    root = workdir / "grpc-www"
    answer = root / GRPC_PATH.lstrip("/")
    answer.parent.mkdir(parents=True)
    answer.write_bytes(GRPC_MESSAGE)
    for path in (root, answer.parent, answer):
        path.chmod(0o755)
    request = workdir / "grpc-request.bin"
    request.write_bytes(GRPC_MESSAGE)
    return root, request


def write_certificates(directory: Path) -> tuple[Path, Path]:
    """A throwaway CA's certificate for 127.0.0.1 and localhost, and its key, made now (never committed)."""
    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert(LOOPBACK, "localhost")
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    for path in (cert, key):
        path.chmod(0o644)  # nginx's workers run as nobody
    return cert, key


def missing_setting(name: str) -> str | None:
    """Why the gateway cannot run a row yet, when it lacks the setting `name` (None when it has it)."""
    if name in Settings.model_fields:
        return None
    return f"this gateway has no GATEWAY_{name.upper()} setting yet"


def grpc_call_problem(port: int, timeout: float = 10.0) -> str | None:
    """What is wrong with a real unary gRPC call to GRPC_PATH at `port`, if anything (None: the responder's reply)."""
    import grpc  # a dev dependency; imported here so that --help works without it

    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        try:
            reply = channel.unary_unary(GRPC_PATH)(GRPC_PAYLOAD, timeout=timeout)
        except grpc.RpcError as exc:
            return f"a gRPC call failed: {exc.code()} {exc.details()}"
    return None if reply == GRPC_PAYLOAD else f"a gRPC call returned {reply!r}, not {GRPC_PAYLOAD!r}"


def websocket_handshake_status(port: int, timeout: float = 5.0) -> str:
    """The status line the server at `port` answers a WebSocket upgrade with ("HTTP/1.1 101 ..." when it proxies)."""
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as connection:
        connection.sendall(request.encode())
        head = b""
        while b"\r\n" not in head:
            chunk = connection.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed without an answer)"
