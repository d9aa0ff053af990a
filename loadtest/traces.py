"""What every trace a load run caused should look like in the collector, and the verdict on each one (no I/O).

A response announces its trace in the gateway's `traceresponse` header: the trace id, the id of the gateway's
SERVER span and the sampling decision. A sampled trace must be whole (one root, the gateway's SERVER span; every
parent reported; every service the endpoint calls present); an unsampled one must have left no span at all. A
trace no response announced is judged by its root: the gateway's own are checked like the others, and any
other is an orphan, started by a service that lost or ignored the context it was given.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

TRACERESPONSE = "traceresponse"
SERVER = "SERVER"
HTTP_PATH = "http.path"
DEFAULT_GATEWAY_SERVICE = "ingress-gateway"
DEFAULT_MAX_RECORDS = 200_000

# The services each endpoint of the demo mesh (gateway/devtools/mesh/web.py) calls, besides the gateway: a valid
# vote asks emoji for the shortcode, then voting; the leaderboard asks voting, then emoji.
EXPECTED_SERVICES: Mapping[str, frozenset[str]] = {
    "/api/list": frozenset({"web", "emoji"}),
    "/api/vote": frozenset({"web", "emoji", "voting"}),
    "/api/leaderboard": frozenset({"web", "voting", "emoji"}),
}

# version 00: trace id, span id, flags; https://w3c.github.io/trace-context/#traceresponse-header
_TRACERESPONSE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SAMPLED_FLAG = 0x01
_DESCRIBED_SPANS = 3


class Status(StrEnum):
    COMPLETE = "complete"  # sampled and whole
    UNSAMPLED = "unsampled"  # not sampled, and nothing was reported: clean
    MISSING = "missing"  # sampled, yet no span reached the collector
    PARTIAL = "partial"  # some spans, but the tree is broken or a service is missing
    LEAKED = "leaked"  # not sampled, yet spans were reported
    ORPHAN = "orphan"  # announced by no response, and not started by the gateway


BROKEN = frozenset({Status.MISSING, Status.PARTIAL, Status.LEAKED, Status.ORPHAN})


@dataclass(frozen=True, slots=True)
class Record:
    """One response: the trace it announced and the request that caused it (`started` in epoch seconds)."""

    trace_id: int
    span_id: int
    sampled: bool
    endpoint: str
    started: float


@dataclass(frozen=True, slots=True)
class Recording:
    """Every response of a run, with what could not be recorded; `stopped` is when the load stopped (epoch)."""

    records: tuple[Record, ...] = ()
    dropped: int = 0  # responses beyond the recorder's bound
    without_traceresponse: int = 0  # responses that announced no trace (no or malformed header)
    unanswered: int = 0  # requests that got no response at all
    stopped: float | None = None

    @classmethod
    def merge(cls, recordings: Iterable[Recording]) -> Recording:
        """One recording of several (a distributed run's workers)."""
        parts = list(recordings)
        stops = [part.stopped for part in parts if part.stopped is not None]
        return cls(
            records=tuple(record for part in parts for record in part.records),
            dropped=sum(part.dropped for part in parts),
            without_traceresponse=sum(part.without_traceresponse for part in parts),
            unanswered=sum(part.unanswered for part in parts),
            stopped=max(stops) if stops else None,
        )

    def window(self) -> tuple[float, float] | None:
        """(first request sent, load stopped) in epoch seconds: when every trace of the run started."""
        if not self.records:
            return None
        last = max(record.started for record in self.records)
        return min(record.started for record in self.records), max(last, self.stopped or last)


class Recorder:
    """Collects every response's announcement, from any thread, up to `max_records`; the rest are counted."""

    def __init__(self, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records!r}")
        self.max_records = max_records
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._dropped = self._without_header = self._unanswered = 0

    def response(self, endpoint: str, started: float, traceresponse: str | None) -> None:
        announced = parse_traceresponse(traceresponse) if traceresponse is not None else None
        with self._lock:
            if announced is None:
                self._without_header += 1
            elif len(self._records) >= self.max_records:
                self._dropped += 1
            else:
                trace_id, span_id, sampled = announced
                # Interned: a run has a handful of endpoint names and a great many records.
                self._records.append(Record(trace_id, span_id, sampled, sys.intern(endpoint), started))

    def unanswered(self) -> None:
        with self._lock:
            self._unanswered += 1

    def recording(self, stopped: float | None = None) -> Recording:
        with self._lock:
            return Recording(tuple(self._records), self._dropped, self._without_header, self._unanswered, stopped)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._dropped = self._without_header = self._unanswered = 0


def parse_traceresponse(value: str) -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled) from a `traceresponse` value, None when it is malformed or the ids are zero."""
    match = _TRACERESPONSE.fullmatch(value.strip())
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(match[3], 16) & _SAMPLED_FLAG)


@dataclass(frozen=True, slots=True)
class SpanView:
    """The part of a Zipkin v2 span the verdict reads; ids are ints, the service name lowercased as Zipkin does."""

    trace_id: int
    id: int
    parent_id: int | None = None
    kind: str | None = None
    service: str | None = None
    name: str | None = None
    path: str | None = None

    def describe(self) -> str:
        return f"{self.service or '?'} {self.kind or 'span'} {self.name or '?'!r}"


def span_from_json(data: Mapping[str, Any]) -> SpanView:
    """Raises ValueError for anything that is not a Zipkin v2 span with hex ids."""
    try:
        parent = data.get("parentId")
        local = data.get("localEndpoint") or {}
        tags = data.get("tags") or {}
        service = local.get("serviceName")
        return SpanView(
            trace_id=_hex_id(data["traceId"]),
            id=_hex_id(data["id"]),
            parent_id=_hex_id(parent) if parent else None,
            kind=data.get("kind"),
            service=service.lower() if service else None,
            name=data.get("name"),
            path=tags.get(HTTP_PATH),
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"not a Zipkin v2 span: {str(dict(data))[:200]}") from None


def trace_hex(trace_id: int) -> str:
    """A trace id as Zipkin writes it: 16 hex characters for a 64-bit id (a 128-bit id with a zero high half is
    stored as 64-bit), else 32."""
    return f"{trace_id:016x}" if trace_id < 1 << 64 else f"{trace_id:032x}"


def group_by_trace(spans: Iterable[SpanView]) -> dict[int, list[SpanView]]:
    traces: dict[int, list[SpanView]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return dict(traces)


@dataclass(frozen=True, slots=True)
class Expectations:
    """Whose spans make a trace whole: the gateway's (by service name) and those of the services an endpoint calls.

    An endpoint the table does not name needs only the gateway's spans.
    """

    gateway_service: str = DEFAULT_GATEWAY_SERVICE
    services: Mapping[str, frozenset[str]] = field(default_factory=lambda: dict(EXPECTED_SERVICES))

    def services_for(self, endpoint: str | None) -> frozenset[str]:
        return frozenset({self.gateway_service.lower()}) | self.services.get(endpoint or "", frozenset())

    def is_gateway_root(self, span: SpanView) -> bool:
        return span.kind == SERVER and span.service == self.gateway_service.lower()


@dataclass(frozen=True, slots=True)
class TraceVerdict:
    trace_id: int
    status: Status
    endpoint: str | None = None
    problems: tuple[str, ...] = ()
    announced: bool = True


def classify_announced(record: Record, spans: Sequence[SpanView], expectations: Expectations) -> TraceVerdict:
    """The verdict on a trace a response announced, from every span the collector holds of it."""
    if not record.sampled:
        if not spans:
            return TraceVerdict(record.trace_id, Status.UNSAMPLED, record.endpoint)
        problem = f"not sampled, yet reported by {_services(spans)}"
        return TraceVerdict(record.trace_id, Status.LEAKED, record.endpoint, (problem,))
    if not spans:
        problem = "sampled, yet the collector holds no span of it"
        return TraceVerdict(record.trace_id, Status.MISSING, record.endpoint, (problem,))
    problems = tree_problems(spans, expectations, record.endpoint, record.span_id)
    status = Status.PARTIAL if problems else Status.COMPLETE
    return TraceVerdict(record.trace_id, status, record.endpoint, problems)


def classify_unannounced(trace_id: int, spans: Sequence[SpanView], expectations: Expectations) -> TraceVerdict:
    """The verdict on a trace no recorded response announced: the gateway's own (a request cut off when the load
    stopped, or another client's) must be whole all the same; any other is an orphan."""
    roots = [span for span in spans if span.parent_id is None]
    if len(roots) == 1 and expectations.is_gateway_root(roots[0]):
        endpoint = roots[0].path
        problems = tree_problems(spans, expectations, endpoint, None)
        status = Status.PARTIAL if problems else Status.COMPLETE
        return TraceVerdict(trace_id, status, endpoint, problems, announced=False)
    if roots:
        problem = f"announced by no response, started by {_described(roots)}"
    else:
        problem = f"announced by no response, without a root span; reported by {_services(spans)}"
    return TraceVerdict(trace_id, Status.ORPHAN, _first_path(roots or spans), (problem,), announced=False)


def tree_problems(
    spans: Sequence[SpanView], expectations: Expectations, endpoint: str | None, root_span_id: int | None
) -> tuple[str, ...]:
    """Why the spans of one trace are not a whole trace rooted at the gateway's SERVER span (`root_span_id`, when
    a response announced it); empty when they are. The messages carry no ids, so that they can be counted."""
    problems = []
    roots = [span for span in spans if span.parent_id is None]
    if not roots:
        problems.append("no root span")
    elif len(roots) > 1:
        problems.append(f"{len(roots)} root spans: {_described(roots)}")
    elif not expectations.is_gateway_root(roots[0]):
        problems.append(f"the root is {roots[0].describe()}, not the gateway's SERVER span")
    elif root_span_id is not None and roots[0].id != root_span_id:
        problems.append("the root is not the SERVER span the response announced")
    ids = {span.id for span in spans}
    dangling = {span for span in spans if span.parent_id is not None and span.parent_id not in ids}
    if dangling:
        problems.append(f"missing parent of {_described(dangling)}")
    # What hangs below a root or a span whose parent is missing has been accounted for; the rest hangs in a cycle.
    cut_off = _unreachable(spans, [*roots, *dangling])
    if cut_off:
        problems.append(f"not connected to the root: {_described(cut_off)}")
    missing = expectations.services_for(endpoint) - {span.service for span in spans}
    if missing:
        problems.append(f"no span from {', '.join(sorted(missing))}")
    return tuple(problems)


@dataclass(frozen=True, slots=True)
class Report:
    """The verdict on a run: how many traces ended in each status, the broken ones, and run-wide problems that
    stop the check from vouching for every trace (`problems`)."""

    counts: Mapping[Status, int]
    broken: tuple[TraceVerdict, ...]
    problems: tuple[str, ...]
    responses: int
    sampled: int
    unannounced_complete: int = 0
    unanswered: int = 0

    @property
    def passed(self) -> bool:
        return not self.broken and not self.problems

    def problem_counts(self) -> list[tuple[str, int, TraceVerdict]]:
        """Each problem of the broken traces, how many traces have it and the first of them; most frequent first."""
        counts: Counter[str] = Counter()
        examples: dict[str, TraceVerdict] = {}
        for verdict in self.broken:
            for problem in verdict.problems:
                key = f"{verdict.status}: {problem}"
                counts[key] += 1
                examples.setdefault(key, verdict)
        return [(key, count, examples[key]) for key, count in counts.most_common()]

    def as_json(self, examples: int = 20) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "responses": self.responses,
            "sampled": self.sampled,
            "counts": {status.value: self.counts.get(status, 0) for status in Status},
            "unannounced_complete": self.unannounced_complete,
            "unanswered": self.unanswered,
            "problems": list(self.problems),
            "trace_problems": [
                {"problem": problem, "traces": count, "example": trace_hex(example.trace_id)}
                for problem, count, example in self.problem_counts()
            ],
            "examples": [_verdict_json(verdict) for verdict in self.broken[:examples]],
        }


def judge(
    recording: Recording,
    traces: Mapping[int, Sequence[SpanView]],
    expectations: Expectations,
    *,
    check_unannounced: bool = True,
    listing_truncated: bool = False,
) -> Report:
    """The verdict on every trace `recording` announced and, with `check_unannounced`, on every other trace in
    `traces` (which holds whatever the collector has of the run's time window, and of every announced trace)."""
    announced, conflicts = _announcements(recording.records)
    verdicts = [classify_announced(record, traces.get(trace_id, ()), expectations) for trace_id, record in announced]
    unannounced: list[TraceVerdict] = []
    if check_unannounced:
        announced_ids = {trace_id for trace_id, _ in announced}
        unannounced = [
            classify_unannounced(trace_id, spans, expectations)
            for trace_id, spans in traces.items()
            if trace_id not in announced_ids and spans
        ]
    counts = Counter(verdict.status for verdict in verdicts + unannounced)
    broken = tuple(verdict for verdict in verdicts + unannounced if verdict.status in BROKEN)
    return Report(
        counts=dict(counts),
        broken=broken,
        problems=tuple(_run_problems(recording, conflicts, check_unannounced and listing_truncated)),
        responses=len(recording.records),
        sampled=sum(record.sampled for _, record in announced),
        unannounced_complete=sum(verdict.status is Status.COMPLETE for verdict in unannounced),
        unanswered=recording.unanswered,
    )


def summary(report: Report, examples: int = 10) -> str:
    """A few lines for a terminal: the verdict, the counts, and the `examples` most frequent problems."""
    counts = report.counts
    share = f"{report.sampled / report.responses:.1%}" if report.responses else "-"
    lines = [
        f"Trace check: {'PASSED' if report.passed else 'FAILED'}",
        f"  responses  {report.responses:>7}  ({report.sampled} sampled, {share})",
    ]
    for status in Status:
        lines.append(f"  {status.value:<10} {counts.get(status, 0):>7}  {_MEANINGS[status]}")
    if report.unannounced_complete:
        lines.append(
            f"  ({report.unannounced_complete} of the complete traces were announced by no recorded response:"
            " requests cut off when the load stopped, or other clients')"
        )
    if report.unanswered:
        lines.append(f"  ({report.unanswered} requests got no response, so announced no trace)")
    lines.extend(f"  ! {problem}" for problem in report.problems)
    problems = report.problem_counts()
    if problems:
        lines.append("Broken traces, by problem (with one trace to look up in the collector):")
    for problem, count, example in problems[:examples]:
        lines.append(f"  {count:>7} x {problem}")
        lines.append(f"            e.g. {trace_hex(example.trace_id)} {example.endpoint or ''}".rstrip())
    if len(problems) > examples:
        lines.append(f"  ... and {len(problems) - examples} more kinds of problem")
    return "\n".join(lines)


_MEANINGS = {
    Status.COMPLETE: "sampled, whole: one root (the gateway's SERVER span), every parent, every service",
    Status.UNSAMPLED: "not sampled, and nothing reported",
    Status.MISSING: "sampled, yet no span in the collector",
    Status.PARTIAL: "sampled, but spans or services missing, or the tree broken",
    Status.LEAKED: "not sampled, yet spans reported",
    Status.ORPHAN: "announced by no response and not started by the gateway",
}


def _announcements(records: Sequence[Record]) -> tuple[list[tuple[int, Record]], int]:
    # One trace per response is the rule; a trace announced twice with different decisions is a broken promise.
    first: dict[int, Record] = {}
    conflicts = 0
    for record in records:
        seen = first.setdefault(record.trace_id, record)
        if seen is not record and (seen.sampled, seen.span_id) != (record.sampled, record.span_id):
            conflicts += 1
    return list(first.items()), conflicts


def _run_problems(recording: Recording, conflicts: int, listing_truncated: bool) -> Iterable[str]:
    if not recording.records:
        yield "no response announced a trace: nothing was checked"
    if recording.dropped:
        yield f"{recording.dropped} responses beyond the recorder's bound: their traces went unchecked"
    if recording.without_traceresponse:
        yield f"{recording.without_traceresponse} responses carried no valid {TRACERESPONSE} header"
    if conflicts:
        yield f"{conflicts} responses announced a trace already announced with another span or decision"
    if listing_truncated:
        yield "the collector listed as many traces as asked for: traces of the run may have gone unseen"


def _unreachable(spans: Sequence[SpanView], starts: Iterable[SpanView]) -> list[SpanView]:
    children: dict[int, list[SpanView]] = defaultdict(list)
    for span in spans:
        if span.parent_id is not None:
            children[span.parent_id].append(span)
    reached = {span.id for span in starts}
    frontier = list(reached)
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child.id not in reached:
                reached.add(child.id)
                frontier.append(child.id)
    return [span for span in spans if span.id not in reached]


def _described(spans: Iterable[SpanView]) -> str:
    described = sorted({span.describe() for span in spans})
    more = len(described) - _DESCRIBED_SPANS
    return ", ".join(described[:_DESCRIBED_SPANS]) + (f" and {more} more" if more > 0 else "")


def _services(spans: Iterable[SpanView]) -> str:
    return ", ".join(sorted({span.service or "?" for span in spans}))


def _first_path(spans: Iterable[SpanView]) -> str | None:
    return next((span.path for span in spans if span.path), None)


def _hex_id(value: Any) -> int:
    if not isinstance(value, str) or not 0 < len(value) <= 32:
        raise ValueError(value)
    return int(value, 16)


def _verdict_json(verdict: TraceVerdict) -> dict[str, Any]:
    return {
        "trace_id": trace_hex(verdict.trace_id),
        "status": verdict.status.value,
        "endpoint": verdict.endpoint,
        "announced": verdict.announced,
        "problems": list(verdict.problems),
    }
