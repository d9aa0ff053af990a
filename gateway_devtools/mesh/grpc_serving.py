"""Runs `emoji-grpc` (gateway_devtools/mesh/emoji_grpc.py) on a grpc.aio server until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

import grpc

from gateway.sampling import RatioSampler
from gateway.span_sender import HttpSpanSender
from gateway.spans import local_endpoint
from gateway_devtools.mesh.emoji_grpc import add_to
from gateway_devtools.mesh.reporting import SpanBatcher
from gateway_devtools.mesh.tracing import Misbehaviour, Tracer

NAME = "emoji-grpc"
REPORT_TIMEOUT = 5.0
SHUTDOWN_DEADLINE = 5.0
EXIT_CANNOT_LISTEN = 1


def serve_emoji_grpc(host: str, port: int, zipkin_url: str, misbehaviour: Misbehaviour, sample_rate: float) -> int:
    return asyncio.run(_serve(host, port, zipkin_url, misbehaviour, sample_rate))


async def _serve(host: str, port: int, zipkin_url: str, misbehaviour: Misbehaviour, sample_rate: float) -> int:
    tracer = Tracer(local_endpoint(NAME, host, port), RatioSampler(sample_rate), misbehaviour)
    batcher = SpanBatcher(HttpSpanSender(zipkin_url, REPORT_TIMEOUT))
    server = grpc.aio.server()
    add_to(server, tracer, batcher)
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        print(f"{NAME}: cannot listen on {host}:{port}: {exc}", flush=True)
        return EXIT_CANNOT_LISTEN
    if zipkin_url:
        await batcher.start()
    await server.start()
    reporting = f"reporting to {zipkin_url}" if zipkin_url else "not reporting spans"
    print(f"{NAME} listening on h2c://{host}:{port} ({reporting})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(SHUTDOWN_DEADLINE)
    if zipkin_url:
        await batcher.stop(SHUTDOWN_DEADLINE)
    return 0
