"""What the edge decided when a request or call began: its trace, its sampling decision, the headers to forward."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sampling import Decision
from gateway.spans import W3C_TRACESTATE


@dataclass(slots=True)
class TraceStart:
    """One request's start, shared by every protocol's flow (HTTP exchanges, gRPC calls).

    Not frozen, for the reason `spans.Exchange` gives: one is made per request. ``outgoing`` is the request's headers
    as they go upstream, trace context included; ``trace_response`` the headers the client gets back for its trace.
    """

    trace_id: int
    server_span_id: int
    client_span_id: int
    parent_id: int | None
    decision: Decision
    reserved: bool  # the reporter's room was reserved for this new trace
    host: str  # the Host the upstream is sent
    outgoing: list[tuple[bytes, bytes]]
    trace_response: list[tuple[bytes, bytes]]
    tracestate: str | None  # the trace's W3C tracestate after the decision (its `ot` threshold), recorded on the spans

    def tags(self, tags: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """The spans' tags: the given ones, and the trace's tracestate when it has one."""
        return tags if not self.tracestate else (*tags, (W3C_TRACESTATE, self.tracestate))
