"""What the gateway gives each protocol's flow (gateway/http_flow.py, grpc_flow.py, websocket_proxy.py)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.access_log import AccessLogWriter
from gateway.metrics import Metrics
from gateway.reporter import SpanReporter
from gateway.request_metrics import RequestLatency
from gateway.settings import Settings
from gateway.trace_start import TraceStarter


@dataclass(frozen=True, slots=True)
class FlowParts:
    """The parts every flow uses on each request: how its trace starts, and where the request is recorded (spans,
    access log, metrics). ``access_log`` is None when access lines are off."""

    settings: Settings
    metrics: Metrics
    starter: TraceStarter
    reporter: SpanReporter
    access_log: AccessLogWriter | None
    request_metrics: RequestLatency
