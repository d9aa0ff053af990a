"""The access line of one request, as bytes: the JSON object `logs.JsonFormatter` wrote, without `logging`.

The keys, their order and their values are those of a `gateway.access` record formatted by `JsonFormatter`, so a log
pipeline that read the old lines reads these. One difference in the bytes, none in the values: orjson writes
DEL and the characters beyond ASCII as they are (UTF-8) where `json.dumps` wrote `\\uXXXX` escapes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import orjson

from gateway.logs import ACCESS_LOGGER

_LOW_64_BITS_SHIFT = 64


def access_line(
    ts: float,
    method: str,
    path: str,
    status: int | None,
    duration: float,
    trace_id: int,
    route: str,
    sampled: bool,
    reason: str,
    client: str | None,
    error: str | None,
    websocket: Mapping[str, object] | None = None,
    grpc_status: int | None = None,
) -> bytes:
    """One line, newline included: `ts` in seconds since the epoch, `duration` in seconds; a WebSocket session's
    line has its facts (messages, bytes, how it closed) under `websocket`; a gRPC call's line has its `grpc_status`."""
    line = {
        "ts": round(ts, 6),
        "level": "info",
        "logger": ACCESS_LOGGER,
        "msg": f"{method} {path} {status}",
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
        "trace_id": f"{trace_id:032x}" if trace_id >> _LOW_64_BITS_SHIFT else f"{trace_id:016x}",
        "route": route,
        "sampled": sampled,
        "reason": reason,
        "client": client,
        "error": error,
    }
    if websocket is not None:
        line["websocket"] = websocket
    if grpc_status is not None:
        line["grpc_status"] = grpc_status
    try:
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        # A lone surrogate (orjson refuses them): json escapes it, as the old formatter did.
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"
