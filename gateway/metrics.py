"""Prometheus metrics. Every request is counted by its sampling decision, every drop by its reason.

With several workers, prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `__main__` before
any worker starts) keeps one file per worker and the admin listener sums them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from gateway.propagation import INVALID_REASONS
from gateway.request_metrics import (
    HTTP_REQUEST_DURATION,
    HTTP_REQUEST_DURATION_HELP,
    HTTP_REQUEST_DURATION_LABELS,
    LATENCY_BUCKETS,
    REQUEST_DURATION,
    REQUEST_DURATION_HELP,
    REQUEST_DURATION_LABELS,
    PrometheusRequestLatency,
    RequestLatency,
    TalliedRequestLatency,
)

# A `*_created` series per counter and histogram child doubles what Prometheus scrapes and stores, and nothing
# here reads it: rate() and increase() already handle a restart's reset.
disable_created_metrics()  # type: ignore[no-untyped-call]

SPAN_DROP_REASONS = ("queue_full", "rejected", "partially_rejected", "retries_exhausted", "shutdown", "encode_error")
SPAN_BATCH_OUTCOMES = ("ok", "retried", "failed")
UPSTREAM_ERROR_KINDS = ("timeout", "unreachable", "protocol", "client_disconnected", "no_route")
# Requests the gateway refused or cut off because of what the client sent, or did not send (gateway/client_guard.py).
CLIENT_ERROR_KINDS = (
    "invalid_request",
    "bad_target",
    "header_too_large",
    "header_timeout",
    "body_timeout",
    "send_timeout",
    # HTTP/2 (gateway/h2_server.py): a frame or stream the protocol forbids; too many resets, pings or settings.
    "protocol_error",
    "flood",
)
CLIENT_PROTOCOLS = ("http1", "h2")
HTTP2_RESETS_BY = ("client", "gateway")
IGNORED_HEADER_REASONS = ("untrusted", *INVALID_REASONS)
ROUTE_RELOAD_OUTCOMES = ("ok", "unchanged", "rejected")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The gateway's metrics, registered on their own registry so that tests and apps do not collide."""

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess: bool | None = None) -> None:
        """``multiprocess``: whether several workers share prometheus-client's files (by default, whether
        PROMETHEUS_MULTIPROC_DIR is set, as ``__main__`` sets it for them)."""
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        # Children per route are created by the gateway each time it loads a route table.
        self.requests = Counter(
            "gateway_requests",
            "Requests by sampling decision, its reason and route.",
            ["decision", "reason", "route"],
            registry=reg,
        )
        self.route_sample_rate = Gauge(
            "gateway_route_sample_rate",
            "Each route's sample rate for new traces (an adaptive route's changes each interval).",
            ["route"],
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.route_reloads = Counter(
            "gateway_route_reloads", "Reloads of the route file, by outcome.", ["outcome"], registry=reg
        )
        self.trace_headers_ignored = Counter(
            "gateway_trace_headers_ignored",
            "Requests whose client-sent trace headers were ignored, by reason.",
            ["reason"],
            registry=reg,
        )
        # Span export, per exporter (`zipkin`, `otlp`): each has its own queue, batches and collector (issue 19).
        self.spans_reported = Counter(
            "gateway_spans_reported", "Spans accepted by the collector.", ["exporter"], registry=reg
        )
        self.spans_dropped = Counter(
            "gateway_spans_dropped", "Spans never delivered, by reason.", ["exporter", "reason"], registry=reg
        )
        self.span_batches = Counter(
            "gateway_span_batches",
            "Span batches sent to the collector, by outcome.",
            ["exporter", "outcome"],
            registry=reg,
        )
        self.span_queue_depth = Gauge(
            "gateway_span_queue_depth",
            "Spans queued or reserved for export.",
            ["exporter"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.span_queue_bytes = Gauge(
            "gateway_span_queue_bytes",
            "Estimated memory held by queued or reserved spans, in bytes.",
            ["exporter"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.client_errors = Counter(
            "gateway_client_errors",
            "Requests refused or cut off because of the client, by kind.",
            ["kind"],
            registry=reg,
        )
        self.client_connections = Gauge(
            "gateway_client_connections", "Open client connections.", registry=reg, multiprocess_mode="livesum"
        )
        # HTTP/2 and the connection dispatcher (gateway/edge.py, gateway/h2_server.py).
        self.client_protocol_connections = Counter(
            "gateway_client_protocol_connections", "Client connections opened, by protocol.", ["protocol"], registry=reg
        )
        self.http2_streams = Counter("gateway_http2_streams", "HTTP/2 streams opened by clients.", registry=reg)
        self.http2_resets = Counter(
            "gateway_http2_resets", "HTTP/2 streams reset, by who reset them.", ["by"], registry=reg
        )
        self.event_loop_tasks = Gauge(
            "gateway_event_loop_tasks", "asyncio tasks alive in the workers.", registry=reg, multiprocess_mode="livesum"
        )
        self.sampling_suspended = Gauge(
            "gateway_sampling_suspended",
            "1 while new traces are not sampled because the exporter's span queue is full.",
            ["exporter"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Failed upstream exchanges, by kind.", ["kind"], registry=reg
        )
        # The access log (gateway/access_log.py).
        self.access_log_dropped_lines = Counter(
            "gateway_access_log_dropped_lines",
            "Access lines dropped because stderr did not keep up (a full pipe, a stuck log collector).",
            registry=reg,
        )
        # Each request's latency, both histograms from one observation (gateway/request_metrics.py): counted in lists
        # and written at collection by one process, prometheus-client's metric objects when workers share files.
        self.request_latency: RequestLatency
        self.shared_files = shared_files = MULTIPROC_ENV in os.environ if multiprocess is None else multiprocess
        if shared_files:
            self.request_latency = PrometheusRequestLatency(
                Histogram(
                    REQUEST_DURATION,
                    REQUEST_DURATION_HELP,
                    REQUEST_DURATION_LABELS,
                    buckets=LATENCY_BUCKETS,
                    registry=reg,
                ),
                Histogram(
                    HTTP_REQUEST_DURATION,
                    HTTP_REQUEST_DURATION_HELP,
                    HTTP_REQUEST_DURATION_LABELS,
                    buckets=LATENCY_BUCKETS,
                    registry=reg,
                ),
            )
        else:
            tallied = TalliedRequestLatency(LATENCY_BUCKETS)
            reg.register(tallied)
            self.request_latency = tallied
        # TLS termination (gateway/tls.py).
        self.tls_handshakes = Counter(
            "gateway_tls_handshakes",
            "TLS handshakes by outcome and negotiated ALPN protocol.",
            ["outcome", "protocol"],
            registry=reg,
        )
        self.tls_certificate_expiry = Gauge(
            "gateway_tls_certificate_expiry_timestamp_seconds",
            "When each certificate in force expires (notAfter), in seconds since the epoch.",
            ["certificate"],
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.tls_reloads = Counter(
            "gateway_tls_reloads",
            "Certificates renewed, added or removed on disk, by outcome.",
            ["certificate", "outcome"],
            registry=reg,
        )
        # gRPC calls (gateway/grpc_flow.py): by the HTTP status and the gRPC status the client got.
        self.grpc_calls = Counter(
            "gateway_grpc_calls",
            "gRPC calls by route, HTTP status and gRPC status.",
            ["route", "http_status", "grpc_status"],
            registry=reg,
        )
        self.grpc_timeouts_ignored = Counter(
            "gateway_grpc_timeouts_ignored", "gRPC calls whose malformed grpc-timeout was ignored.", registry=reg
        )
        self.ready = Gauge("gateway_worker_ready", "Workers ready to serve.", registry=reg, multiprocess_mode="livesum")
        self._create_children()

    def _create_children(self) -> None:
        # Children that exist from the start show as 0 in /metrics instead of being absent until the first event.
        for outcome in ROUTE_RELOAD_OUTCOMES:
            self.route_reloads.labels(outcome)
        for reason in IGNORED_HEADER_REASONS:
            self.trace_headers_ignored.labels(reason)
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind)
        for kind in CLIENT_ERROR_KINDS:
            self.client_errors.labels(kind)
        for protocol in CLIENT_PROTOCOLS:
            self.client_protocol_connections.labels(protocol)
        for by in HTTP2_RESETS_BY:
            self.http2_resets.labels(by)
