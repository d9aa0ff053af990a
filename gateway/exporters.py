"""The span exporters the settings ask for (Zipkin, OTLP, both, or none), behind one `SpanReporter`.

With both, every sampled trace goes to both, each through its own queue, batches and retries: a slow collector holds
back only its own. A new trace is sampled only when every exporter has room for it, so that neither ever gets part of
a trace; an exporter that had room gives its reservation back when another had none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from py_zipkin.encoding import Endpoint

from gateway.metrics import Metrics
from gateway.otlp import OtlpEncoder, parse_key_values, resource_attributes
from gateway.otlp_sender import OtlpHttpSender
from gateway.reporter import DisabledReporter, Reporter, SpanReporter
from gateway.settings import Settings
from gateway.span_payload import SpanEncoder
from gateway.span_sender import HttpSpanSender, SpanSender
from gateway.spans import Exchange

ZIPKIN = "zipkin"
OTLP = "otlp"


class FanOutReporter:
    """Several reporters as one: room only when each has room, every exchange to each."""

    def __init__(self, reporters: Sequence[SpanReporter]) -> None:
        self._reporters = tuple(reporters)

    def reserve(self) -> bool:
        for index, reporter in enumerate(self._reporters):
            if not reporter.reserve():
                for earlier in self._reporters[:index]:
                    earlier.release()
                return False
        return True

    def release(self) -> None:
        for reporter in self._reporters:
            reporter.release()

    def submit(self, exchange: Exchange, reserved: bool) -> None:
        for reporter in self._reporters:
            reporter.submit(exchange, reserved)

    async def start(self) -> None:
        for reporter in self._reporters:
            await reporter.start()

    async def stop(self, deadline: float) -> None:
        # Together, not one after the other: each has the whole deadline to deliver what it holds.
        await asyncio.gather(*(reporter.stop(deadline) for reporter in self._reporters))


def build_reporter(settings: Settings, local: Endpoint, metrics: Metrics) -> SpanReporter:
    """A reporter per configured collector (GATEWAY_ZIPKIN_URL, GATEWAY_OTLP_URL), joined when there are two."""
    reporters: list[SpanReporter] = []
    if settings.zipkin_url:
        reporters.append(
            _reporter(settings, HttpSpanSender(settings.zipkin_url, settings.reporter_timeout), local, metrics, ZIPKIN)
        )
    if settings.otlp_url:
        sender = OtlpHttpSender(
            settings.otlp_url, parse_key_values(settings.otlp_headers.get_secret_value()), settings.reporter_timeout
        )
        encoder = OtlpEncoder(resource_attributes(settings.service_name))
        reporters.append(_reporter(settings, sender, local, metrics, OTLP, encoder))
    if not reporters:
        return DisabledReporter()
    return reporters[0] if len(reporters) == 1 else FanOutReporter(reporters)


def _reporter(
    settings: Settings,
    sender: SpanSender,
    local: Endpoint,
    metrics: Metrics,
    exporter: str,
    encoder: SpanEncoder | None = None,
) -> Reporter:
    return Reporter(
        sender,
        local,
        metrics,
        max_queue_spans=settings.reporter_queue_size,
        max_queue_bytes=settings.reporter_queue_bytes,
        batch_spans=settings.reporter_batch_size,
        flush_interval=settings.reporter_flush_interval,
        max_attempts=settings.reporter_max_attempts,
        encoder=encoder,
        exporter=exporter,
    )
