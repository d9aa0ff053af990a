"""How a routed request's trace starts at the edge: trust, extract, decide once, propagate.

Every flow (HTTP exchanges, gRPC calls, WebSocket handshakes) starts its request's trace here, so that a client is
trusted, a trace sampled and its context sent upstream the same way whatever the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.context import NO_CONTEXT, IdGenerator, TraceContext
from gateway.forwarding import upstream_request_headers
from gateway.metrics import Metrics
from gateway.propagation import extract_context
from gateway.propagation.b3 import format_multi, format_single
from gateway.propagation.w3c import (
    MALFORMED_TRACESTATE,
    TRACERESPONSE_BYTES,
    TRACESTATE_BYTES,
    format_traceparent,
    format_traceresponse,
)
from gateway.routes import Upstream
from gateway.routing import ActiveRoute
from gateway.sampling import Decision, TracesPerSecondCap, decide, tracestate_after
from gateway.settings import Propagation, Settings
from gateway.spans import W3C_TRACESTATE, Exchange
from gateway.threshold import NO_OT, parse_ot
from gateway.trust import TrustedNetworks

B3_SINGLE = b"b3"
TRACEPARENT = b"traceparent"


@dataclass(slots=True)
class TraceStart:
    """One request's start, shared by every protocol's flow, which makes its spans from it once the request is over.

    Not frozen, for the reason `spans.Exchange` gives: one is made per request. ``outgoing`` is the request's headers
    as they go upstream (Host first), trace context included; ``trace_response`` the headers the client gets back for
    its trace.
    """

    trace_id: int
    server_span_id: int
    client_span_id: int
    parent_id: int | None
    decision: Decision
    host: str  # the request's Host, as the spans record it
    outgoing: list[tuple[bytes, bytes]]
    trace_response: list[tuple[bytes, bytes]]
    tracestate: str | None  # the trace's W3C tracestate after the decision (its `ot` threshold), recorded on the spans

    def exchange(
        self,
        name: str,
        method: str,
        path: str,
        status: int | None,
        upstream_status: int | None,
        error: str | None,
        client_host: str | None,
        client_port: int | None,
        upstream: Upstream,
        server_start: float,
        server_duration: float,
        client_start: float,
        client_duration: float,
        tags: tuple[tuple[str, str], ...],
    ) -> Exchange:
        """The finished request's spans to report: this trace's ids and decision, what happened, the given ``tags``
        and the trace's tracestate when it has one."""
        # Positional, in field order: with twenty keywords, making the record cost three times as much.
        return Exchange(
            self.trace_id,
            self.server_span_id,
            self.client_span_id,
            self.parent_id,
            self.decision.debug,
            name,
            method,
            path,
            self.host,
            status,
            upstream_status,
            error,
            client_host,
            client_port,
            upstream,
            server_start,
            server_duration,
            client_start,
            client_duration,
            tags if not self.tracestate else (*tags, (W3C_TRACESTATE, self.tracestate)),
        )


class TraceStarter:
    """Starts the traces of one gateway's requests, with its trust, ids, caps, reporter and propagation formats."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        ids: IdGenerator,
        reserve: Callable[[], bool],
        exporting: bool,
    ) -> None:
        self._preserve_host = settings.preserve_host
        self._trust = TrustedNetworks(settings.trust_incoming_trace, settings.trusted_cidrs)
        self._ids = ids
        self._cap = TracesPerSecondCap(settings.max_traces_per_second)
        self._reserve = reserve
        self._exporting = exporting  # no exporter: nothing new is sampled (decide() says why)
        self._emit_single = Propagation.B3_SINGLE in settings.propagation
        self._emit_traceparent = Propagation.TRACE_CONTEXT in settings.propagation
        self._trace_response_header = settings.trace_response_header
        self._ignored = metrics.trace_headers_ignored
        self._ignored_untrusted = metrics.trace_headers_ignored.labels("untrusted")
        self._ignored_tracestate = metrics.trace_headers_ignored.labels(MALFORMED_TRACESTATE)

    def start(
        self, route: ActiveRoute, request_headers: list[tuple[bytes, bytes]], client_host: str | None, scheme: str
    ) -> TraceStart:
        """Trust, extract, decide once and propagate; ``scheme`` is the one X-Forwarded-Proto tells the upstream."""
        forwarded = upstream_request_headers(
            request_headers,
            client_host=client_host,
            scheme=scheme,
            upstream_authority=route.upstream.authority,
            preserve_host=self._preserve_host,
        )
        incoming = NO_CONTEXT
        if self._trust.trusts(client_host):
            incoming = extract_context(request_headers)
            if incoming.invalid is not None:
                self._ignored.labels(incoming.invalid).inc()
                incoming = NO_CONTEXT
            elif incoming.tracestate_invalid:
                self._ignored_tracestate.inc()
        elif forwarded.had_trace_headers:
            self._ignored_untrusted.inc()

        parent = incoming.context
        trace_id = parent.trace_id if parent is not None else self._ids.new_trace_id()
        ot = parse_ot(incoming.tracestate) if incoming.tracestate else NO_OT
        decision = decide(incoming, trace_id, route.sampler, route.cap, self._cap, self._reserve, ot, self._exporting)
        tracestate = tracestate_after(incoming.tracestate, ot, decision)
        server_span_id = self._ids.new_span_id()
        client_span_id = self._ids.new_span_id()
        upstream_context = TraceContext(trace_id, client_span_id, server_span_id, decision.sampled, decision.debug)
        outgoing = forwarded.headers
        outgoing.extend(format_multi(upstream_context))
        if self._emit_single:
            outgoing.append((B3_SINGLE, format_single(upstream_context).encode()))
        if self._emit_traceparent:
            # The Random flag only on an id of the gateway's making: a client's may not be random.
            outgoing.append((TRACEPARENT, format_traceparent(upstream_context, random=parent is None).encode()))
            if tracestate:
                # The vendors' state of a trusted client's trace goes on with it (W3C: "MUST propagate"), with the
                # gateway's sampling threshold in its `ot` entry.
                outgoing.append((TRACESTATE_BYTES, tracestate.encode("latin-1")))
        return TraceStart(
            trace_id,
            server_span_id,
            client_span_id,
            parent.span_id if parent is not None else None,
            decision,
            forwarded.host,
            outgoing,
            self._trace_response(trace_id, server_span_id, decision.sampled),
            tracestate,
        )

    def unrouted_trace_response(self) -> list[tuple[bytes, bytes]]:
        # Nothing goes into the mesh, so nothing is traced; the contract still promises a traceresponse.
        return self._trace_response(self._ids.new_trace_id(), self._ids.new_span_id(), sampled=False)

    def _trace_response(self, trace_id: int, span_id: int, sampled: bool) -> list[tuple[bytes, bytes]]:
        if not self._trace_response_header:
            return []
        return [(TRACERESPONSE_BYTES, format_traceresponse(trace_id, span_id, sampled).encode())]
