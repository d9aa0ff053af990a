"""A uvicorn server on loopback with gateway/edge.py as its protocol and a small ASGI app of the shapes HTTP/2 must
carry (trailers, trailers-only, large and held bodies, a wait for disconnect), run in a thread of the test process.

The gateway's own app proxies over HTTP/1.1 and never sends trailers; these shapes are what the gRPC branch relies
on, so they are driven here with a raw client that sees every frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from gateway import client_guard, edge
from gateway.settings import Settings
from tests.support import LOOPBACK, free_port

BIG = 1024 * 1024


@dataclass
class Controls:
    """What the app did, and what it waits for, shared between the test and the server's thread."""

    log: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def saw(self, entry: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while entry not in self.log and time.monotonic() < deadline:
            time.sleep(0.01)
        return entry in self.log


class ShapesApp:
    def __init__(self, controls: Controls) -> None:
        self.controls = controls

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/trailers":
            await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
            await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
            await send({"type": "http.response.body", "body": b"world", "more_body": False})
            trailers = [(b"grpc-status", b"0"), (b"grpc-message", b"ok")]
            await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})
        elif path == "/trailers-only":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"grpc-status", b"5")]})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(BIG // 65536):
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.controls.log.append(f"big done {scope['query_string'].decode()}")
        elif path == "/hold":
            self.controls.log.append("holding")
            while not self.controls.release.is_set():
                await asyncio.sleep(0.01)
            size = sum(len(message.get("body", b"")) for message in await _body(receive))
            await _json(send, {"received": size})
        elif path == "/wait-disconnect":
            self.controls.log.append("waiting")
            await _body(receive)
            message = await receive()
            self.controls.log.append(message["type"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.controls.log.append("send after disconnect dropped")
        elif path == "/boom":
            raise RuntimeError("the app failed")
        else:
            messages = await _body(receive)
            await _json(
                send,
                {
                    "http_version": scope["http_version"],
                    "scheme": scope["scheme"],
                    "method": scope["method"],
                    "path": scope["path"],
                    "raw_path": scope["raw_path"].decode("latin-1"),
                    "query_string": scope["query_string"].decode("latin-1"),
                    "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
                    "client": list(scope["client"]),
                    "extensions": sorted(scope.get("extensions", {})),
                    "body_length": sum(len(message.get("body", b"")) for message in messages),
                },
            )


async def _body(receive: Any) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


async def _json(send: Any, payload: object) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class ShapesServer:
    port: int
    controls: Controls
    server: uvicorn.Server


LIMITS = dict(
    client_header_timeout=2.0,
    client_body_timeout=2.0,
    client_send_timeout=4.0,
    client_keepalive_timeout=30.0,
    client_max_header_bytes=4096,
    http2_max_concurrent_streams=10,
)


@contextlib.contextmanager
def shapes_server(**overrides: Any) -> Iterator[ShapesServer]:
    """The server for the block's duration; stopped gracefully (as on SIGTERM) at its end, if still running."""
    settings = Settings(upstream_url="http://127.0.0.1:9", **{**LIMITS, **overrides})
    client_guard.configure(settings)
    edge.configure(settings)
    controls = Controls()
    port = free_port()
    config = uvicorn.Config(
        ShapesApp(controls),
        host=LOOPBACK,
        port=port,
        http=edge.PROTOCOL,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=20,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="h2 shapes server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the HTTP/2 test server did not start"
    try:
        yield ShapesServer(port, controls, server)
    finally:
        controls.release.set()
        server.should_exit = True
        thread.join(30)
