"""One stream of an upstream h2c connection (gateway/h2_connection.py), as its caller reads it.

The connection fills it from its reading task: the status and headers (then `response_started` is set), the data on
a queue that ends with `END` or the error, the trailers; `window` wakes a body sender when flow control may allow more.
"""

from __future__ import annotations

import asyncio

import h2.errors

from gateway.proxy import UpstreamError

END = object()  # put on a stream's queue after its last data


class UpstreamReset(UpstreamError):
    """The upstream reset the stream (RST_STREAM); `error_code` is its HTTP/2 error code."""

    def __init__(self, error_code: int) -> None:
        super().__init__(f"upstream reset the stream ({_code_name(error_code)})")
        self.error_code = error_code


class Stream:
    __slots__ = ("id", "status_code", "headers", "trailers", "data", "response_started", "window", "error", "sender")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.status_code: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.data: asyncio.Queue[object] = asyncio.Queue()
        self.response_started = asyncio.Event()
        self.window = asyncio.Event()  # set when the send window may have opened
        self.error: UpstreamError | None = None
        self.sender: asyncio.Task[None] | None = None


def _code_name(error_code: int) -> str:
    try:
        return h2.errors.ErrorCodes(error_code).name
    except ValueError:
        return str(error_code)
