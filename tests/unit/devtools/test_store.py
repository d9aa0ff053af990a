from __future__ import annotations

from typing import Any

import pytest

from gateway_devtools.collector.model import Endpoint, Span
from gateway_devtools.collector.query import TraceQuery
from gateway_devtools.collector.store import SpanStore
from tests.support import FakeClock

NOW_MS = 1_700_000_000_000
T0 = NOW_MS * 1000 - 10_000_000


def span(
    trace_id: int,
    span_id: int,
    parent_id: int | None = None,
    service: str | None = "web",
    name: str = "get",
    remote: str | None = None,
    timestamp: int | None = T0,
    duration: int = 100,
) -> Span:
    return Span(
        trace_id=trace_id,
        id=span_id,
        parent_id=parent_id,
        name=name,
        timestamp=timestamp,
        duration=duration,
        local_endpoint=Endpoint(service_name=service) if service else None,
        remote_endpoint=Endpoint(service_name=remote) if remote else None,
    )


def query(**fields: Any) -> TraceQuery:
    return TraceQuery(**{"end_ts": NOW_MS, "lookback": 86_400_000, **fields})


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_store(clock):
    def make(max_spans=100, max_age=60.0):
        return SpanStore(max_spans=max_spans, max_age=max_age, clock=clock)

    return make


def trace_ids(store: SpanStore) -> list[int]:
    return sorted({spans[0].trace_id for spans in store.traces(query(limit=1000))})


# --- storing and reading back ----------------------------------------------------------------------------------------


def test_trace_reads_back_its_spans_by_timestamp(make_store):
    store = make_store()
    late, early = span(1, 2, parent_id=1, timestamp=T0 + 50), span(1, 1, timestamp=T0)

    assert store.accept([late, early, span(2, 3)]) == 3

    assert store.trace(1) == [early, late]
    assert store.trace(3) is None


def test_equal_span_sent_twice_is_stored_once_and_counted(make_store):
    store = make_store()
    store.accept([span(1, 1)])

    assert store.accept([span(1, 1), span(1, 1, name="other")]) == 1

    assert len(store.trace(1)) == 2
    stats = store.stats()
    assert (stats.spans, stats.received, stats.duplicates) == (2, 3, 1)


def test_clear_forgets_spans_and_counters(make_store):
    store = make_store()
    store.accept([span(1, 1), span(1, 1)])

    store.clear()

    assert store.trace(1) is None
    assert store.service_names() == []
    assert store.stats() == type(store.stats())(0, 0, 0, 0, 0)


@pytest.mark.parametrize(("max_spans", "max_age"), [(0, 60.0), (10, 0.0), (10, -1.0)])
def test_bad_limits_fail_when_the_store_is_built(max_spans, max_age):
    with pytest.raises(ValueError, match="must be"):
        SpanStore(max_spans=max_spans, max_age=max_age)


# --- retention -------------------------------------------------------------------------------------------------------


def test_oldest_whole_traces_go_first_when_max_spans_is_passed(make_store):
    store = make_store(max_spans=4)
    store.accept([span(1, 1), span(1, 2)])
    store.accept([span(2, 3)])
    store.accept([span(3, 4)])

    store.accept([span(4, 5)])

    assert trace_ids(store) == [2, 3, 4]
    stats = store.stats()
    assert (stats.spans, stats.traces, stats.evicted) == (3, 3, 2)


def test_a_trace_that_grows_is_kept_over_older_quiet_ones(make_store):
    store = make_store(max_spans=3)
    store.accept([span(1, 1)])
    store.accept([span(2, 2)])
    store.accept([span(1, 3)])

    store.accept([span(3, 4)])

    assert trace_ids(store) == [1, 3]


def test_a_single_trace_above_max_spans_keeps_its_newest_spans(make_store):
    store = make_store(max_spans=3)
    store.accept([span(9, 1, timestamp=T0 + 1), span(9, 2, parent_id=1, timestamp=T0 + 2)])

    store.accept([span(9, 3, parent_id=1, timestamp=T0 + 3), span(9, 4, parent_id=1, timestamp=T0 + 4)])

    assert [s.id for s in store.trace(9)] == [2, 3, 4]
    # The root went, so the trace is now found by its earliest remaining span.
    assert store.traces(query(end_ts=(T0 + 2) // 1000 + 1, lookback=1))[0][0].id == 2


def test_traces_older_than_max_age_are_evicted(make_store, clock):
    store = make_store(max_age=60.0)
    store.accept([span(1, 1, service="old", name="old-op", remote="db")])
    clock.advance(30)
    store.accept([span(2, 2, service="new")])

    clock.advance(30.5)

    assert store.trace(1) is None
    assert store.trace(2) is not None
    assert store.service_names() == ["new"]
    assert store.span_names("old") == []
    assert store.remote_service_names("old") == []
    assert store.traces(query(service_name="old")) == []
    assert store.stats().evicted == 1


def test_a_new_span_renews_its_trace(make_store, clock):
    store = make_store(max_age=60.0)
    store.accept([span(1, 1)])
    clock.advance(50)
    store.accept([span(1, 2, parent_id=1)])

    clock.advance(50)

    assert len(store.trace(1)) == 2
    clock.advance(11)
    assert store.trace(1) is None


def test_indexes_forget_evicted_spans_but_keep_shared_names(make_store):
    store = make_store(max_spans=2)
    store.accept([span(1, 1, service="web", name="a", remote="emoji")])
    store.accept([span(2, 2, service="web", name="b", remote="voting")])
    store.accept([span(3, 3, service="web", name="b")])

    assert store.span_names("web") == ["b"]
    assert store.remote_service_names("web") == ["voting"]


# --- service queries -------------------------------------------------------------------------------------------------


def test_names_are_sorted_and_unique_per_service(make_store):
    store = make_store()
    store.accept(
        [
            span(1, 1, service="web", name="post /vote", remote="voting"),
            span(1, 2, service="web", name="get /list", remote="emoji"),
            span(2, 3, service="web", name="get /list", remote="emoji"),
            span(2, 4, service="emoji", name="listall"),
            span(2, 5, service=None, name="orphan"),
        ]
    )

    assert store.service_names() == ["emoji", "web"]
    assert store.span_names("web") == ["get /list", "post /vote"]
    assert store.remote_service_names("web") == ["emoji", "voting"]
    assert store.span_names("nobody") == []


# --- trace queries ---------------------------------------------------------------------------------------------------


def test_traces_are_newest_first_by_root_timestamp_and_limited(make_store):
    store = make_store()
    store.accept([span(1, 1, timestamp=T0 + 3)])
    # The child started earlier than its root (clock skew); the root's timestamp still decides.
    store.accept([span(2, 2, timestamp=T0 + 5), span(2, 3, parent_id=2, timestamp=T0 + 1)])
    store.accept([span(3, 4, timestamp=T0 + 4)])

    assert [t[0].trace_id for t in store.traces(query())] == [2, 3, 1]
    assert [t[0].trace_id for t in store.traces(query(limit=2))] == [2, 3]


def test_trace_without_root_is_placed_by_its_earliest_span(make_store):
    store = make_store()
    store.accept([span(1, 1, parent_id=99, timestamp=T0 + 7), span(1, 2, parent_id=99, timestamp=T0 + 2)])
    store.accept([span(2, 3, timestamp=T0 + 5)])

    assert [t[0].trace_id for t in store.traces(query())] == [2, 1]


def test_traces_outside_the_window_or_without_timestamps_are_not_listed(make_store):
    store = make_store()
    store.accept([span(1, 1, timestamp=T0)])
    store.accept([span(2, 2, timestamp=T0 - 120_000_000)])
    store.accept([span(3, 3, timestamp=None)])

    found = store.traces(query(end_ts=NOW_MS, lookback=60_000))

    assert [t[0].trace_id for t in found] == [1]
    assert store.trace(3) is not None


def test_service_query_uses_the_index_and_applies_every_filter(make_store):
    store = make_store()
    store.accept([span(1, 1, service="web", name="get /api", duration=500), span(1, 2, parent_id=1, service="emoji")])
    store.accept([span(2, 3, service="web", name="get /api", duration=50)])
    store.accept([span(3, 4, service="voting", name="vote", duration=500)])

    assert trace_ids_of(store.traces(query(service_name="web"))) == [1, 2]
    assert trace_ids_of(store.traces(query(service_name="web", min_duration=100))) == [1]
    assert trace_ids_of(store.traces(query(span_name="vote"))) == [3]
    assert trace_ids_of(store.traces(query(service_name="emoji", span_name="get /api"))) == []
    assert store.traces(query(service_name="nobody")) == []


def trace_ids_of(traces: list[list[Span]]) -> list[int]:
    return sorted(t[0].trace_id for t in traces)
