"""`create_app(config)`: one demo service as a Starlette app, with its tracer, span batcher and downstream client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from py_zipkin.encoding import Span
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from gateway.context import IdGenerator
from gateway.sampling import RatioSampler
from gateway.span_sender import HttpSpanSender
from gateway.spans import local_endpoint
from gateway_devtools.mesh import emoji, voting, web
from gateway_devtools.mesh.instrument import Downstream, SpanSink, TracingMiddleware
from gateway_devtools.mesh.reporting import DEFAULT_FLUSH_INTERVAL, SpanBatcher
from gateway_devtools.mesh.tracing import Misbehaviour, Tracer

WEB = "web"
EMOJI = "emoji"
VOTING = "voting"
SERVICES = (WEB, EMOJI, VOTING)
REPORT_TIMEOUT = 5.0
SHUTDOWN_DEADLINE = 5.0


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """`sample_rate` decides for requests that come without a decision (and for all under ignore-decision)."""

    service: str
    host: str = "127.0.0.1"
    port: int = 0
    zipkin_url: str = ""
    emoji_url: str = ""
    voting_url: str = ""
    trace_page_url: str = ""
    misbehaviour: Misbehaviour = Misbehaviour.NONE
    sample_rate: float = 1.0
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    downstream_timeout: float = 5.0


def create_app(config: ServiceConfig, ids: IdGenerator | None = None) -> Starlette:
    """Raises ValueError for an unknown service, a bad sample rate, or a `web` without its downstream URLs."""
    if config.service not in SERVICES:
        raise ValueError(f"unknown service {config.service!r}: one of {', '.join(SERVICES)}")
    if config.service == WEB and not (config.emoji_url and config.voting_url):
        raise ValueError("web needs the emoji and voting services' URLs")
    local = local_endpoint(config.service, config.host, config.port)
    tracer = Tracer(local, RatioSampler(config.sample_rate), config.misbehaviour, ids)
    batcher = (
        SpanBatcher(HttpSpanSender(config.zipkin_url, REPORT_TIMEOUT), flush_interval=config.flush_interval)
        if config.zipkin_url
        else None
    )
    client = httpx.AsyncClient(timeout=config.downstream_timeout, trust_env=False)
    routes = _routes(config, client, tracer)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if batcher is not None:
            await batcher.start()
        try:
            yield
        finally:
            await client.aclose()
            if batcher is not None:
                await batcher.stop(SHUTDOWN_DEADLINE)

    sink: SpanSink = batcher if batcher is not None else _Discard()
    return Starlette(routes=routes, middleware=[Middleware(TracingMiddleware, tracer, sink)], lifespan=lifespan)


class _Discard:
    """No collector configured: decisions still travel downstream, spans go nowhere."""

    def submit(self, spans: list[Span]) -> None:
        return None


def _routes(config: ServiceConfig, client: httpx.AsyncClient, tracer: Tracer) -> Sequence[BaseRoute]:
    if config.service == EMOJI:
        return emoji.routes()
    if config.service == VOTING:
        return voting.routes(voting.Ballot())
    emoji_service = Downstream(EMOJI, config.emoji_url, client, tracer)
    voting_service = Downstream(VOTING, config.voting_url, client, tracer)
    return web.routes(emoji_service, voting_service, config.trace_page_url)
