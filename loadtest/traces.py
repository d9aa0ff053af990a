"""What every trace a load run caused should look like in the trace backend, and the verdict on each (no I/O).

A response announces its trace in the gateway's `traceresponse` header: the trace id, the id of the gateway's
SERVER span and the sampling decision. A sampled trace must be whole (one root, the gateway's SERVER span; every
parent reported; every span its endpoint's expectations list; one trace id); an unsampled one must have left no span
at all. A trace no response announced is judged by its root: the gateway's own are checked like the others, and any
other is an orphan, started by a service that lost or ignored the context it was given.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.propagation.w3c import TRACERESPONSE, parse_traceresponse
from gateway.threshold import parse_ot
from loadtest.expectations import Expectations, missing_spans
from loadtest.rates import ALL_ROUTES, RateGroup, RouteLookup, RouteRate, rate_groups
from loadtest.thresholds import ThresholdGroup, threshold_groups

HTTP_PATH = "http.path"
# The gateway's tracestate on its spans, with its sampling threshold (`ot=th:`), as Zipkin and Jaeger keep it.
W3C_TRACESTATE = "w3c.tracestate"
DEFAULT_MAX_RECORDS = 200_000
DEFAULT_MAX_FORGED = 5_000
LOW_64_BITS = (1 << 64) - 1

_DESCRIBED_SPANS = 3
_LISTED_TRACES = 5


class Status(StrEnum):
    COMPLETE = "complete"  # sampled and whole
    UNSAMPLED = "unsampled"  # not sampled, and nothing was reported: clean
    MISSING = "missing"  # sampled, yet no span reached the backend
    PARTIAL = "partial"  # some spans, but the tree is broken or a span is missing
    LEAKED = "leaked"  # not sampled, yet spans were reported
    ORPHAN = "orphan"  # announced by no response, and not started by the gateway


BROKEN = frozenset({Status.MISSING, Status.PARTIAL, Status.LEAKED, Status.ORPHAN})


@dataclass(frozen=True, slots=True)
class Record:
    """One response: the trace it announced and the request that caused it (`started` in epoch seconds);
    `hostile` when the request carried forged trace headers."""

    trace_id: int
    span_id: int
    sampled: bool
    endpoint: str
    started: float
    hostile: bool = False

    def to_wire(self) -> list[Any]:
        return [
            f"{self.trace_id:032x}",
            f"{self.span_id:016x}",
            self.sampled,
            self.endpoint,
            self.started,
            self.hostile,
        ]

    @classmethod
    def from_wire(cls, entry: Any) -> Record:
        """Raises ValueError for anything `to_wire` did not write."""
        try:
            trace_id, span_id, sampled, endpoint, started, hostile = entry
            if not (isinstance(sampled, bool) and isinstance(hostile, bool) and isinstance(endpoint, str)):
                raise TypeError
            return cls(int(trace_id, 16), int(span_id, 16), sampled, sys.intern(endpoint), float(started), hostile)
        except (TypeError, ValueError):
            raise ValueError(f"bad record {str(entry)[:100]}") from None


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """What a recorder took in since its last batch: how a worker streams its records to the master."""

    records: tuple[Record, ...] = ()
    forged: tuple[int, ...] = ()
    dropped: int = 0
    without_traceresponse: int = 0
    unanswered: int = 0
    forged_sent: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "records": [record.to_wire() for record in self.records],
            "forged": [f"{trace_id:032x}" for trace_id in self.forged],
            "counts": [self.dropped, self.without_traceresponse, self.unanswered, self.forged_sent],
        }

    @classmethod
    def from_wire(cls, data: Any) -> RecordBatch:
        """Raises ValueError for anything `to_wire` did not write."""
        try:
            dropped, without, unanswered, forged_sent = (int(count) for count in data["counts"])
            return cls(
                records=tuple(Record.from_wire(entry) for entry in data["records"]),
                forged=tuple(int(trace_id, 16) for trace_id in data["forged"]),
                dropped=dropped,
                without_traceresponse=without,
                unanswered=unanswered,
                forged_sent=forged_sent,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad record batch: {exc}") from None


@dataclass(frozen=True, slots=True)
class Recording:
    """Every response of a run, with what could not be recorded; `stopped` is when the load stopped (epoch)."""

    records: tuple[Record, ...] = ()
    dropped: int = 0  # responses beyond the recorder's bound
    without_traceresponse: int = 0  # responses that announced no trace (no or malformed header)
    unanswered: int = 0  # requests that got no response at all
    stopped: float | None = None
    forged: tuple[int, ...] = ()  # trace ids the hostile client forged (a bounded sample)
    forged_sent: int = 0  # requests with a forged trace id, sampled or not

    @classmethod
    def merge(cls, recordings: Iterable[Recording]) -> Recording:
        """One recording of several (a distributed run's workers, saved separately)."""
        parts = list(recordings)
        stops = [part.stopped for part in parts if part.stopped is not None]
        return cls(
            records=tuple(record for part in parts for record in part.records),
            dropped=sum(part.dropped for part in parts),
            without_traceresponse=sum(part.without_traceresponse for part in parts),
            unanswered=sum(part.unanswered for part in parts),
            stopped=max(stops) if stops else None,
            forged=tuple(trace_id for part in parts for trace_id in part.forged),
            forged_sent=sum(part.forged_sent for part in parts),
        )

    def window(self) -> tuple[float, float] | None:
        """(first request sent, load stopped) in epoch seconds: when every trace of the run started."""
        if not self.records:
            return None
        last = max(record.started for record in self.records)
        return min(record.started for record in self.records), max(last, self.stopped or last)


class Recorder:
    """Collects every response's announcement, from any thread, up to `max_records`; the rest are counted.

    `batch()` hands out what came in since the last batch (a worker streams it to the master, whose own recorder
    `absorb`s it), while `recording()` always holds everything.
    """

    def __init__(self, max_records: int = DEFAULT_MAX_RECORDS, max_forged: int = DEFAULT_MAX_FORGED) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records!r}")
        self.max_records = max_records
        self.max_forged = max_forged
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._forged: list[int] = []
        self._counts = [0, 0, 0, 0]  # dropped, without traceresponse, unanswered, forged sent
        self._sent_records = self._sent_forged = 0
        self._sent_counts = [0, 0, 0, 0]
        self._sampled = self._hostile = 0

    def response(self, endpoint: str, started: float, traceresponse: str | None, hostile: bool = False) -> None:
        announced = parse_traceresponse(traceresponse) if traceresponse is not None else None
        with self._lock:
            if announced is None:
                self._counts[1] += 1
            elif len(self._records) >= self.max_records:
                self._counts[0] += 1
            else:
                trace_id, span_id, sampled = announced
                # Interned: a run has a handful of endpoint names and a great many records.
                self._records.append(Record(trace_id, span_id, sampled, sys.intern(endpoint), started, hostile))
                self._sampled += sampled
                self._hostile += hostile

    def unanswered(self) -> None:
        with self._lock:
            self._counts[2] += 1

    def forged(self, trace_id: int) -> None:
        """A trace id the hostile client sent: it must never show up in a response or in the backend."""
        with self._lock:
            self._counts[3] += 1
            if len(self._forged) < self.max_forged:
                self._forged.append(trace_id)

    def absorb(self, batch: RecordBatch) -> None:
        with self._lock:
            room = max(0, self.max_records - len(self._records))
            kept = batch.records[:room]
            self._records.extend(kept)
            self._sampled += sum(record.sampled for record in kept)
            self._hostile += sum(record.hostile for record in kept)
            self._forged.extend(batch.forged[: max(0, self.max_forged - len(self._forged))])
            extra = (len(batch.records) - room if len(batch.records) > room else 0, 0, 0, 0)
            counts = (batch.dropped, batch.without_traceresponse, batch.unanswered, batch.forged_sent)
            for index, (count, more) in enumerate(zip(counts, extra, strict=True)):
                self._counts[index] += count + more

    def batch(self) -> RecordBatch:
        with self._lock:
            records, forged = self._records[self._sent_records :], self._forged[self._sent_forged :]
            self._sent_records, self._sent_forged = len(self._records), len(self._forged)
            delta = [now - sent for now, sent in zip(self._counts, self._sent_counts, strict=True)]
            self._sent_counts = list(self._counts)
        return RecordBatch(tuple(records), tuple(forged), *delta)

    def recording(self, stopped: float | None = None) -> Recording:
        with self._lock:
            dropped, without, unanswered, forged_sent = self._counts
            return Recording(
                tuple(self._records), dropped, without, unanswered, stopped, tuple(self._forged), forged_sent
            )

    def tally(self) -> tuple[int, int, int]:
        """(responses recorded, of which sampled, of which hostile), without copying the records."""
        with self._lock:
            return len(self._records), self._sampled, self._hostile

    def records_since(self, index: int) -> list[Record]:
        with self._lock:
            return self._records[index:]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._forged.clear()
            self._counts = [0, 0, 0, 0]
            self._sent_records = self._sent_forged = 0
            self._sent_counts = [0, 0, 0, 0]
            self._sampled = self._hostile = 0


@dataclass(frozen=True, slots=True)
class SpanView:
    """The part of a span the verdict reads; ids are ints, service names lowercased as Zipkin stores them;
    `remote` is the service a CLIENT span calls."""

    trace_id: int
    id: int
    parent_id: int | None = None
    kind: str | None = None
    service: str | None = None
    name: str | None = None
    path: str | None = None
    remote: str | None = None
    tracestate: str | None = None

    def describe(self) -> str:
        return f"{self.service or '?'} {self.kind or 'span'} {self.name or '?'!r}"


def span_from_json(data: Mapping[str, Any]) -> SpanView:
    """A Zipkin v2 span; raises ValueError for anything that is not one with hex ids."""
    try:
        parent = data.get("parentId")
        local = data.get("localEndpoint") or {}
        remote = data.get("remoteEndpoint") or {}
        tags = data.get("tags") or {}
        return SpanView(
            trace_id=hex_id(data["traceId"]),
            id=hex_id(data["id"]),
            parent_id=hex_id(parent) if parent else None,
            kind=data.get("kind"),
            service=_lower(local.get("serviceName")),
            name=data.get("name"),
            path=tags.get(HTTP_PATH),
            remote=_lower(remote.get("serviceName")),
            tracestate=tags.get(W3C_TRACESTATE),
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"not a Zipkin v2 span: {str(dict(data))[:200]}") from None


def trace_hex(trace_id: int) -> str:
    """A trace id as Zipkin writes it: 16 hex characters for a 64-bit id (a 128-bit id with a zero high half is
    stored as 64-bit), else 32."""
    return f"{trace_id:016x}" if trace_id < 1 << 64 else f"{trace_id:032x}"


def hex_id(value: Any) -> int:
    """An id of 1 to 32 hex characters; raises ValueError otherwise."""
    if not isinstance(value, str) or not 0 < len(value) <= 32:
        raise ValueError(value)
    return int(value, 16)


def group_by_trace(spans: Iterable[SpanView]) -> dict[int, list[SpanView]]:
    traces: dict[int, list[SpanView]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return dict(traces)


@dataclass(frozen=True, slots=True)
class TraceVerdict:
    trace_id: int
    status: Status
    endpoint: str | None = None
    problems: tuple[str, ...] = ()
    announced: bool = True


def classify_announced(
    record: Record, spans: Sequence[SpanView], expectations: Expectations, strays: Sequence[SpanView] = ()
) -> TraceVerdict:
    """The verdict on a trace a response announced, from every span the backend holds of it; `strays` are spans
    of another trace id with the same low 64 bits (a service that kept only half of a 128-bit id)."""
    if not record.sampled:
        reported = [*spans, *strays]
        if not reported:
            return TraceVerdict(record.trace_id, Status.UNSAMPLED, record.endpoint)
        problem = f"not sampled, yet reported by {_services(reported)}"
        return TraceVerdict(record.trace_id, Status.LEAKED, record.endpoint, (problem,))
    if not spans:
        problem = "sampled, yet the trace backend holds no span of it"
        return TraceVerdict(record.trace_id, Status.MISSING, record.endpoint, (problem,))
    problems = tree_problems(spans, expectations, record.endpoint, record.span_id)
    if strays:
        problems += (f"spans under another trace id (the same low 64 bits) from {_services(strays)}",)
    status = Status.PARTIAL if problems else Status.COMPLETE
    return TraceVerdict(record.trace_id, status, record.endpoint, problems)


def classify_unannounced(trace_id: int, spans: Sequence[SpanView], expectations: Expectations) -> TraceVerdict:
    """The verdict on a trace no recorded response announced: the gateway's own (a request cut off when the load
    stopped, or another client's) must be whole all the same; any other is an orphan."""
    roots = [span for span in spans if span.parent_id is None]
    if len(roots) == 1 and expectations.is_gateway_root(roots[0].service, roots[0].kind):
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
    elif not expectations.is_gateway_root(roots[0].service, roots[0].kind):
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
    missing = missing_spans(
        expectations.spans_for(endpoint), [(span.service, span.kind, span.remote) for span in spans]
    )
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    return tuple(problems)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The sample rate the gateway was configured with (None: not checked), and per route when it has a route
    file; `sigmas` is the binomial bound; `upper_only` checks only that no more than the rate was sampled."""

    rate: float | None = None
    routes: RouteLookup | None = None
    sigmas: float = 4.0
    upper_only: bool = False

    @property
    def active(self) -> bool:
        return self.rate is not None or self.routes is not None

    def groups(self, records: Iterable[Record]) -> list[RateGroup]:
        decisions = ((record.endpoint, record.sampled, record.hostile) for record in records)
        return rate_groups(decisions, self.rate, self.routes, self.sigmas, self.upper_only)

    def threshold_groups(
        self, records: Iterable[Record], traces: Mapping[int, Sequence[SpanView]]
    ) -> list[ThresholdGroup]:
        """Per route, the thresholds the gateway's SERVER spans recorded against the share it sampled."""
        lookup = self.routes or (lambda endpoint: RouteRate(ALL_ROUTES))
        configured: dict[str, float | None] = {}
        decisions: list[tuple[str, bool, int | None]] = []
        for record in records:
            route = lookup(record.endpoint)
            fixed = route.rate if route.rate is not None else self.rate
            uncapped = not (route.adaptive or route.capped or self.upper_only)
            configured[route.name] = fixed if uncapped else None
            decisions.append((route.name, record.sampled, _recorded_threshold(record, traces)))
        return threshold_groups(decisions, configured, self.sigmas)


@dataclass(frozen=True, slots=True)
class Report:
    """The verdict on a run: how many traces ended in each status, the broken ones, the sampled fraction per group
    against the configured rate, and run-wide problems that stop the check from vouching for every trace."""

    counts: Mapping[Status, int]
    broken: tuple[TraceVerdict, ...]
    problems: tuple[str, ...]
    responses: int
    sampled: int
    unannounced_complete: int = 0
    unanswered: int = 0
    rates: tuple[RateGroup, ...] = ()
    thresholds: tuple[ThresholdGroup, ...] = ()
    hostile: int = 0
    hostile_sampled: int = 0
    forged_checked: int = 0
    forged_seen: tuple[int, ...] = ()
    workers: int = 0

    @property
    def rate_ok(self) -> bool:
        return all(group.ok for group in self.rates) and all(group.ok for group in self.thresholds)

    @property
    def passed(self) -> bool:
        return not self.broken and not self.problems and self.rate_ok

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
            "rate_ok": self.rate_ok,
            "rates": [group.as_json() for group in self.rates],
            "thresholds": [group.as_json() for group in self.thresholds if group.thresholds],
            "hostile": {
                "responses": self.hostile,
                "sampled": self.hostile_sampled,
                "forged_trace_ids_checked": self.forged_checked,
                "forged_trace_ids_seen": [trace_hex(trace_id) for trace_id in self.forged_seen],
            },
            "workers": self.workers,
            "problems": list(self.problems),
            "trace_problems": [
                {"problem": problem, "traces": count, "example": trace_hex(example.trace_id)}
                for problem, count, example in self.problem_counts()
            ],
            "broken": [_verdict_json(verdict) for verdict in self.broken[:examples]],
            "broken_total": len(self.broken),
        }


def judge(
    recording: Recording,
    traces: Mapping[int, Sequence[SpanView]],
    expectations: Expectations,
    *,
    check_unannounced: bool = True,
    listing_truncated: bool = False,
    rates: RatePolicy | None = None,
    unfetched: int = 0,
    workers: int = 0,
    run_problems: Sequence[str] = (),
) -> Report:
    """The verdict on every trace `recording` announced and, with `check_unannounced`, on every other trace in
    `traces` (which holds whatever the backend has of the run's time window, of every announced trace and of every
    forged trace id); `unfetched` traces could not be asked for in time; `run_problems` are the caller's own
    reasons not to vouch for the run (a worker whose records never arrived)."""
    announced, conflicts = _announcements(recording.records)
    announced_ids = {trace_id for trace_id, _ in announced}
    strays = _strays(announced_ids, traces)
    verdicts = [
        classify_announced(record, traces.get(trace_id, ()), expectations, strays.get(trace_id, ()))
        for trace_id, record in announced
    ]
    stray_ids = {span.trace_id for spans in strays.values() for span in spans}
    unannounced: list[TraceVerdict] = []
    if check_unannounced:
        unannounced = [
            classify_unannounced(trace_id, spans, expectations)
            for trace_id, spans in traces.items()
            if trace_id not in announced_ids and trace_id not in stray_ids and spans
        ]
    counts = Counter(verdict.status for verdict in verdicts + unannounced)
    broken = tuple(verdict for verdict in verdicts + unannounced if verdict.status in BROKEN)
    forged_seen = tuple(sorted({t for t in recording.forged if t in announced_ids or traces.get(t)}))
    forged_problems = []
    if forged_seen:
        example = trace_hex(forged_seen[0])
        forged_problems.append(
            f"{len(forged_seen)} forged trace ids reached a response or the trace backend: {example}"
        )
    hostile = [record for _, record in announced if record.hostile]
    return Report(
        counts=dict(counts),
        broken=broken,
        problems=(
            *_run_problems(recording, conflicts, check_unannounced and listing_truncated, unfetched),
            *forged_problems,
            *run_problems,
        ),
        responses=len(recording.records),
        sampled=sum(record.sampled for _, record in announced),
        unannounced_complete=sum(verdict.status is Status.COMPLETE for verdict in unannounced),
        unanswered=recording.unanswered,
        rates=tuple(rates.groups(record for _, record in announced)) if rates is not None and rates.active else (),
        thresholds=(
            tuple(rates.threshold_groups((record for _, record in announced), traces))
            if rates is not None and rates.active
            else ()
        ),
        hostile=len(hostile),
        hostile_sampled=sum(record.sampled for record in hostile),
        forged_checked=len(set(recording.forged)),
        forged_seen=forged_seen,
        workers=workers,
    )


def _recorded_threshold(record: Record, traces: Mapping[int, Sequence[SpanView]]) -> int | None:
    """The threshold on the gateway's SERVER span of a sampled record's trace (the span its response announced)."""
    if not record.sampled:
        return None
    for span in traces.get(record.trace_id, ()):
        if span.id == record.span_id and span.tracestate:
            return parse_ot(span.tracestate).threshold
    return None


def summary(report: Report, examples: int = 10, listed: int = _LISTED_TRACES) -> str:
    """A few lines for a terminal: the verdict, the counts, the rate check, the first `listed` broken traces with
    what each lacks, and the `examples` most frequent problems."""
    counts = report.counts
    share = f"{report.sampled / report.responses:.1%}" if report.responses else "-"
    workers = f", from {report.workers} workers" if report.workers else ""
    lines = [
        f"Trace check: {'PASSED' if report.passed else 'FAILED'}",
        f"  responses  {report.responses:>7}  ({report.sampled} sampled, {share}{workers})",
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
    if report.hostile or report.forged_checked:
        seen = f"{len(report.forged_seen)} of" if report.forged_seen else "none of"
        lines.append(
            f"  forged trace headers: {report.hostile} responses, {report.hostile_sampled} sampled at the gateway's own"
            f" rate; {seen} the {report.forged_checked} forged trace ids reached a response or the trace backend"
        )
    if report.rates:
        lines.append(f"Sample rate: {'as configured' if report.rate_ok else 'NOT as configured'}")
        lines.extend(f"  {'ok ' if group.ok else 'BAD'} {group.describe()}" for group in report.rates)
    recorded = [group for group in report.thresholds if group.thresholds]
    if recorded:
        lines.append("  recorded sampling thresholds (ot=th) against the share sampled, per route:")
        lines.extend(f"  {'ok ' if group.ok else 'BAD'} {group.describe()}" for group in recorded)
    lines.extend(f"  ! {problem}" for problem in report.problems)
    if report.broken:
        lines.append(f"Broken traces (the first {min(listed, len(report.broken))} of {len(report.broken)}):")
    for verdict in report.broken[:listed]:
        lines.append(
            f"  {verdict.status.value:<8} {trace_hex(verdict.trace_id)} {verdict.endpoint or '?'}: "
            + "; ".join(verdict.problems)
        )
    problems = report.problem_counts()
    if len(report.broken) > listed:
        lines.append("Broken traces, by problem (with one trace to look up in the trace backend):")
        for problem, count, example in problems[:examples]:
            lines.append(f"  {count:>7} x {problem}")
            lines.append(f"            e.g. {trace_hex(example.trace_id)} {example.endpoint or ''}".rstrip())
        if len(problems) > examples:
            lines.append(f"  ... and {len(problems) - examples} more kinds of problem")
    return "\n".join(lines)


_MEANINGS = {
    Status.COMPLETE: "sampled, whole: one root (the gateway's SERVER span), every parent, every expected span",
    Status.UNSAMPLED: "not sampled, and nothing reported",
    Status.MISSING: "sampled, yet no span in the trace backend",
    Status.PARTIAL: "sampled, but spans missing or the tree broken",
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


def _strays(announced: set[int], traces: Mapping[int, Sequence[SpanView]]) -> dict[int, list[SpanView]]:
    """Spans of unannounced trace ids that share the low 64 bits of an announced 128-bit one, by announced id."""
    by_low: dict[int, int] = {trace_id & LOW_64_BITS: trace_id for trace_id in announced}
    strays: dict[int, list[SpanView]] = defaultdict(list)
    for trace_id, spans in traces.items():
        owner = by_low.get(trace_id & LOW_64_BITS)
        if owner is not None and owner != trace_id and trace_id not in announced:
            strays[owner].extend(spans)
    return dict(strays)


def _run_problems(recording: Recording, conflicts: int, listing_truncated: bool, unfetched: int) -> Iterable[str]:
    if not recording.records:
        yield "no response announced a trace: nothing was checked"
    if recording.dropped:
        yield f"{recording.dropped} responses beyond the recorder's bound: their traces went unchecked"
    if recording.without_traceresponse:
        yield f"{recording.without_traceresponse} responses carried no valid {TRACERESPONSE} header"
    if conflicts:
        yield f"{conflicts} responses announced a trace already announced with another span or decision"
    if listing_truncated:
        yield "the trace backend listed as many traces as asked for: traces of the run may have gone unseen"
    if unfetched:
        yield f"{unfetched} traces could not be asked for before the check's timeout: they went unchecked"


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


def _lower(name: Any) -> str | None:
    return name.lower() if isinstance(name, str) and name else None


def _verdict_json(verdict: TraceVerdict) -> dict[str, Any]:
    return {
        "trace_id": trace_hex(verdict.trace_id),
        "status": verdict.status.value,
        "endpoint": verdict.endpoint,
        "announced": verdict.announced,
        "problems": list(verdict.problems),
    }
