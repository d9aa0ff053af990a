"""A WebSocket upstream for the e2e and reliability tests: `python -m tests.e2e.ws_upstream --port N`.

What a path does:
- `/echo`: sends back every message as it came (text as text, bytes as bytes);
- `/close?code=C&reason=R`: after the first message, closes with that code and reason;
- `/big?size=N`: sends one binary message of N bytes, then echoes;
- `/flood?size=N&count=K`: sends K binary messages of N bytes as fast as the connection takes them;
- `/refuse`: answers 403 with a body and an `x-refused-by` header instead of upgrading.
Subprotocol `chat.v2` is the only one supported. With `?token=T`, the session's handshake headers, subprotocol offer
and how it closed are kept; `GET /events?token=T` (plain HTTP) answers them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

SUBPROTOCOL = Subprotocol("chat.v2")
_events: dict[str, list[dict[str, Any]]] = {}


def _query(path: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}


def _record(token: str | None, event: dict[str, Any]) -> None:
    if token:
        _events.setdefault(token, []).append(event)


def _process_request(connection: ServerConnection, request: Request) -> Response | None:
    path = urlsplit(request.path).path
    if path == "/events":
        token = _query(request.path).get("token", "")
        body = json.dumps({"events": _events.get(token, [])}).encode()
        return Response(200, "OK", Headers([("Content-Type", "application/json")]), body)
    if path == "/refuse":
        headers = Headers([("Content-Type", "text/plain"), ("X-Refused-By", "upstream")])
        return Response(HTTPStatus.FORBIDDEN, "Forbidden", headers, b"go away\n")
    session_token = _query(request.path).get("token")
    _record(session_token, {"type": "handshake", "path": request.path, "headers": list(request.headers.raw_items())})
    return None


async def _handler(connection: ServerConnection) -> None:
    request = connection.request
    assert request is not None
    path = urlsplit(request.path).path
    query = _query(request.path)
    token = query.get("token")
    try:
        if path == "/big":
            await connection.send(b"b" * int(query["size"]))
        if path == "/flood":
            chunk = b"f" * int(query.get("size", "262144"))
            for _ in range(int(query.get("count", "400"))):
                await connection.send(chunk)
        async for message in connection:
            if path == "/close":
                await connection.close(int(query["code"]), query.get("reason", ""))
                break
            await connection.send(message)
    except ConnectionClosed:
        pass
    finally:
        await connection.wait_closed()
        _record(token, {"type": "closed", "code": connection.close_code, "reason": connection.close_reason})


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # A client that offers none (or none we speak) still gets a session, without a subprotocol.
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


async def _main(port: int) -> None:
    async with serve(
        _handler,
        "127.0.0.1",
        port,
        process_request=_process_request,
        select_subprotocol=_select_subprotocol,
        max_size=None,
        compression=None,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_main(parser.parse_args().port))
