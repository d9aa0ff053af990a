"""The upstream the e2e tests put behind the gateway: plain ASGI, run by uvicorn as a subprocess.

/sleep?seconds=S&token=T   answer after S seconds; /events?token=T says whether the request
                           "started", then "completed" or "disconnected" (the caller went away)
/stream?size=N&chunk=C     N bytes in C-byte chunks; X-Body-Sha256 announces their hash
/upload                    read the body chunk by chunk; answer its length, chunk count and sha256
/hop                       a response carrying hop-by-hop headers the gateway must strip
/status/<code>             an empty response with that status
anything else              echo: method, path, query, headers as [name, value] pairs, body length
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY_SHA256 = "x-body-sha256"
HOP_BY_HOP_RESPONSE_HEADERS = [
    (b"connection", b"X-Custom-Hop"),
    (b"x-custom-hop", b"secret"),
    (b"keep-alive", b"timeout=5"),
    (b"proxy-authenticate", b'Basic realm="upstream"'),
    (b"trailer", b"X-Checksum"),
    (b"upgrade", b"h2c"),
    (b"x-kept", b"yes"),
]
_PATTERN = bytes(range(256)) * 256  # 64 KiB, so a chunk is never one repeated byte

events: dict[str, list[str]] = {}


def pattern_bytes(size: int, chunk: int) -> list[bytes]:
    """The body /stream sends: `size` bytes of a fixed pattern, cut into `chunk`-byte pieces."""
    pieces = []
    sent = 0
    while sent < size:
        length = min(chunk, size - sent)
        pieces.append((_PATTERN * (length // len(_PATTERN) + 1))[:length])
        sent += length
    return pieces


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/sleep":
        await _sleep(float(query.get("seconds", "1")), query.get("token", ""), receive, send)
    elif path == "/events":
        await _json(send, 200, {"events": events.get(query.get("token", ""), [])})
    elif path == "/stream":
        await _stream(int(query["size"]), int(query.get("chunk", "65536")), send)
    elif path == "/upload":
        await _upload(receive, send)
    elif path == "/hop":
        await _drain(receive)
        await _respond(send, 200, b"hop", HOP_BY_HOP_RESPONSE_HEADERS)
    elif path.startswith("/status/"):
        await _drain(receive)
        await _respond(send, int(path.removeprefix("/status/")), b"", [])
    else:
        await _echo(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    body_length = sum(len(chunk) for chunk in await _chunks(receive))
    client = scope.get("client")
    await _json(
        send,
        200,
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
            "body_length": body_length,
            "client": list(client) if client else None,
        },
    )


async def _sleep(seconds: float, token: str, receive: Receive, send: Send) -> None:
    """Sleep unless the caller disconnects first; record which happened under `token`."""
    record = events.setdefault(token, [])
    record.append("started")
    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    done, pending = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if watcher in done:
        record.append("disconnected")
        return
    record.append("completed")
    await _json(send, 200, {"slept": seconds, "token": token})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _stream(size: int, chunk: int, send: Send) -> None:
    pieces = pattern_bytes(size, chunk)
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(size).encode()),
        (BODY_SHA256.encode(), digest.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for piece in pieces:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _upload(receive: Receive, send: Send) -> None:
    digest = hashlib.sha256()
    length = chunks = 0
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        digest.update(body)
        length += len(body)
        chunks += 1 if body else 0
        more_body = message.get("more_body", False)
    await _json(send, 200, {"length": length, "chunks": chunks, "sha256": digest.hexdigest()})


async def _chunks(receive: Receive) -> list[bytes]:
    chunks = []
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    return chunks


async def _drain(receive: Receive) -> None:
    await _chunks(receive)


async def _json(send: Send, status: int, payload: object) -> None:
    await _respond(send, status, json.dumps(payload).encode(), [(b"content-type", b"application/json")])


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
