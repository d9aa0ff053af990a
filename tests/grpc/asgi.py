"""Drives the gateway app at the ASGI level as an HTTP/2 server offering the trailers extension would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, MutableMapping
from typing import Any

from gateway.app import Gateway
from tests.grpc.servers import SERVICE, frame


class AsgiCall:
    """One call: request chunks go in through `put`, what the app sends is kept in `sent`."""

    def __init__(self, app: Gateway, method: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.app = app
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "2",
            "method": "POST",
            "scheme": "http",
            "path": f"/{SERVICE}/{method}",
            "raw_path": f"/{SERVICE}/{method}".encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "extensions": {"http.response.trailers": {}},
        }
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self._incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def put(self, *messages: bytes, end: bool = False) -> None:
        for message in messages:
            self._incoming.put_nowait({"type": "http.request", "body": frame(message), "more_body": True})
        if end:
            self._incoming.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    def disconnect(self) -> None:
        self._incoming.put_nowait({"type": "http.disconnect"})

    def start(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self.app(self.scope, self._receive, self._send))

    async def run(self, *messages: bytes) -> AsgiCall:
        self.put(*messages, end=True)
        await asyncio.wait_for(self.start(), 30)
        return self

    async def wait_for(self, count: int) -> None:
        """Until the app has sent `count` messages (bounded by the caller's timeout)."""
        while len(self.sent) < count:
            self.changed.clear()
            await self.changed.wait()

    async def _receive(self) -> dict[str, Any]:
        return await self._incoming.get()

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))
        self.changed.set()

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(message.get("body", b"") for message in self.sent if message["type"] == "http.response.body")

    @property
    def trailers(self) -> dict[bytes, bytes] | None:
        found = [message for message in self.sent if message["type"] == "http.response.trailers"]
        return dict(found[0]["headers"]) if found else None

    @property
    def grpc_status(self) -> bytes | None:
        trailers = self.trailers
        return (trailers if trailers is not None else self.headers).get(b"grpc-status")
