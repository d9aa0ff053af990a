"""How a demo service takes part in a trace, as a B3 client library would: pure, ids injected, times passed in.

The SERVER span is a child of the caller's span (X-B3-SpanId), as OpenTelemetry does it, rather than Zipkin's
shared span; each outgoing call gets a CLIENT span, child of the SERVER span, whose id goes downstream. Each
misbehaviour breaks one of the three duties the Linkerd tracing guide gives a client library (propagate the
context, start a span, transmit it), so that the partial traces a real mesh gets can be produced on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from py_zipkin import Kind
from py_zipkin.encoding import Endpoint, Span

from gateway.context import MAX_64BIT, Extracted, IdGenerator, RandomIdGenerator, TraceContext
from gateway.propagation.b3 import format_multi
from gateway.sampling import RatioSampler
from gateway.spans import ERROR, HTTP_METHOD, HTTP_PATH, HTTP_STATUS_CODE


class Misbehaviour(StrEnum):
    NONE = "none"
    # Samples by its own rate whatever the caller decided: spans whose parent was never reported.
    IGNORE_DECISION = "ignore-decision"
    # Propagates, but never reports: the service's spans are missing from every trace.
    DROP_SPANS = "drop-spans"
    # Calls downstream without trace headers: downstream starts traces of its own.
    NO_PROPAGATE = "no-propagate"


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One HTTP exchange as a span records it; `start` is epoch seconds, `duration` seconds."""

    method: str
    path: str
    start: float
    duration: float
    status_code: int | None = None
    error: str | None = None
    remote: Endpoint | None = None


class Tracer:
    """The trace decisions and spans of one service, which reports as `local`."""

    def __init__(
        self,
        local: Endpoint,
        sampler: RatioSampler,
        misbehaviour: Misbehaviour = Misbehaviour.NONE,
        ids: IdGenerator | None = None,
    ) -> None:
        self.local = local
        self.misbehaviour = misbehaviour
        self._sampler = sampler
        self._ids = ids if ids is not None else RandomIdGenerator()

    def server_context(self, incoming: Extracted) -> TraceContext:
        """The SERVER span's context: a child of the caller's span, or the root of a new trace.

        The caller's decision (debug implies sampled) is honoured; the service's own sampler decides only when
        there is none, or always under ignore-decision.
        """
        if incoming.context is None:
            trace_id, parent_id = self._ids.new_trace_id(), None
        else:
            trace_id, parent_id = incoming.context.trace_id, incoming.context.span_id
        if self.misbehaviour is Misbehaviour.IGNORE_DECISION or incoming.sampled is None:
            sampled, debug = self._sampler.should_sample(trace_id), False
        else:
            sampled, debug = incoming.sampled, incoming.debug
        return TraceContext(trace_id, self._ids.new_span_id(), parent_id, sampled, debug)

    def client_context(self, server: TraceContext) -> TraceContext:
        return TraceContext(server.trace_id, self._ids.new_span_id(), server.span_id, server.sampled, server.debug)

    def outgoing_headers(self, client: TraceContext) -> list[tuple[bytes, bytes]]:
        if self.misbehaviour is Misbehaviour.NO_PROPAGATE:
            return []
        return format_multi(client)

    def reports(self, context: TraceContext) -> bool:
        return bool(context.sampled) and self.misbehaviour is not Misbehaviour.DROP_SPANS

    def server_span(self, context: TraceContext, call: HttpCall) -> Span:
        return self._span(Kind.SERVER, context, call)

    def client_span(self, context: TraceContext, call: HttpCall) -> Span:
        return self._span(Kind.CLIENT, context, call)

    def _span(self, kind: Kind, context: TraceContext, call: HttpCall) -> Span:
        return Span(
            trace_id=_trace_id_hex(context.trace_id),
            name=f"{call.method} {call.path}",
            parent_id=None if context.parent_id is None else _span_id_hex(context.parent_id),
            span_id=_span_id_hex(context.span_id),
            kind=kind,
            timestamp=call.start,
            duration=call.duration,
            local_endpoint=self.local,
            remote_endpoint=call.remote,
            debug=context.debug,
            tags=dict(_http_tags(call)),
        )


def _http_tags(call: HttpCall) -> Iterable[tuple[str, str | None]]:
    yield HTTP_METHOD, call.method
    yield HTTP_PATH, call.path
    if call.status_code is not None:
        yield HTTP_STATUS_CODE, str(call.status_code)
    # As Brave's HttpResponseParser: an error message if there is one, else any status outside 1xx-3xx.
    if call.error:
        yield ERROR, call.error
    elif call.status_code is not None and not 100 <= call.status_code <= 399:
        yield ERROR, str(call.status_code)


def _trace_id_hex(trace_id: int) -> str:
    return f"{trace_id:032x}" if trace_id > MAX_64BIT else f"{trace_id:016x}"


def _span_id_hex(span_id: int) -> str:
    return f"{span_id:016x}"
