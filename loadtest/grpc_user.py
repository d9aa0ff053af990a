"""A Locust user calling emojivoto's EmojiService over gRPC through the gateway (the demo mesh's emoji-grpc).

Each call is reported to Locust like an HTTP request, with the `traceresponse` the gateway returned as metadata, so
that the trace check (loadtest/plugin.py) reads its trace back and judges it as it judges the HTTP ones. The
locustfile includes this user when LOADTEST_GRPC=1 (the target must route /emojivoto.v1.EmojiService to an h2c
upstream).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from grpc.experimental import gevent as grpc_gevent
from locust import User, between, task

from gateway.propagation.w3c import TRACERESPONSE

SERVICE = "emojivoto.v1.EmojiService"
SHORTCODES = (":joy:", ":sunglasses:", ":rocket:", ":doughnut:", ":pizza:")
CALL_TIMEOUT = 10.0

# grpcio's own threads would block Locust's gevent loop: its gevent integration makes them cooperate.
grpc_gevent.init_gevent()


@dataclass
class GrpcResponse:
    """What the trace check reads of a response: a status (0 = no answer at all) and the response headers."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


class EmojiGrpcCaller(User):
    weight = 1
    wait_time = between(0.2, 0.6)

    def on_start(self) -> None:
        target = urlsplit(self.host or "")
        self.channel = grpc.insecure_channel(target.netloc or str(self.host))

    def on_stop(self) -> None:
        self.channel.close()

    @task(2)
    def list_all(self) -> None:
        self._call("ListAll", b"{}")

    @task(1)
    def find_by_shortcode(self) -> None:
        self._call("FindByShortcode", json.dumps({"id": random.choice(SHORTCODES)}).encode())

    def _call(self, method: str, request: bytes) -> None:
        name = f"/{SERVICE}/{method}"  # the path, as the HTTP users name their requests
        start, started = time.time(), time.perf_counter()
        reply, error, headers = b"", None, {}
        try:
            reply, call = self.channel.unary_unary(name).with_call(request, timeout=CALL_TIMEOUT)
            headers = _metadata(call.initial_metadata(), call.trailing_metadata())
        except grpc.RpcError as exc:
            error = exc
            headers = _metadata(exc.initial_metadata(), exc.trailing_metadata())
        # A trailers-only answer (an error) carries its headers as trailing metadata in grpcio.
        answered = TRACERESPONSE in headers
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(reply),
            response=GrpcResponse(200 if answered else 0, headers),
            context={},
            exception=error,
            start_time=start,
        )


def _metadata(*blocks: Iterable[Any] | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    for block in blocks:
        for key, value in block or ():
            merged.setdefault(str(key), value if isinstance(value, str) else value.decode("latin-1"))
    return merged
