"""The hostile client's forgeries: every kind is sent, and every trace id a lenient parser could read is named."""

from __future__ import annotations

import random
import re

from loadtest.hostile import FORGERIES, Forgery, forge

TRACE_ID = re.compile(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}")


def readable_trace_ids(forgery: Forgery) -> set[int]:
    """The trace ids a parser lenient about everything but the id itself would take from the headers."""
    headers = {name.lower(): value for name, value in forgery.headers.items()}
    candidates = [
        headers.get("x-b3-traceid", ""),
        headers.get("b3", "").split("-")[0],
        (headers.get("traceparent", "").split("-") + ["", ""])[1],
    ]
    return {int(value, 16) for value in candidates if TRACE_ID.fullmatch(value) and int(value, 16)}


def asks_for_sampling(forgery: Forgery) -> bool:
    headers = {name.lower(): value for name, value in forgery.headers.items()}
    return (
        headers.get("x-b3-sampled") in ("1", "true")
        or headers.get("x-b3-flags") == "1"
        or headers.get("b3", "").endswith(("-1", "-d"))
        or headers.get("traceparent", "").endswith("-01")
    )


def test_every_kind_of_forgery_comes_up():
    rng = random.Random(7)
    names = {forge(rng).name for _ in range(2000)}
    assert {"b3 multi, sampled", "b3 multi, debug", "b3 multi, 64-bit id, sampled=true"} <= names
    assert {"b3 single, 1", "b3 single, d", "traceparent, sampled, with tracestate"} <= names
    assert {"traceparent and b3 naming different traces", "a sampling decision without ids"} <= names
    assert "malformed trace headers" in names


def test_each_forgery_names_every_trace_id_it_carries():
    rng = random.Random(11)
    for _ in range(3000):
        forgery = forge(rng)
        assert forgery.headers, forgery
        assert readable_trace_ids(forgery) <= set(forgery.trace_ids), forgery
        assert all(0 < trace_id < 1 << 128 for trace_id in forgery.trace_ids)


def test_well_formed_forgeries_carry_a_trace_id_and_ask_for_sampling():
    rng = random.Random(3)
    for make in FORGERIES:
        forgery = make(rng)
        if forgery.name in ("a sampling decision without ids", "malformed trace headers"):
            continue
        assert forgery.trace_ids and readable_trace_ids(forgery) == set(forgery.trace_ids), forgery
        assert asks_for_sampling(forgery), forgery


def test_a_decision_without_ids_carries_none():
    rng = random.Random(5)
    for _ in range(50):
        forgery = FORGERIES[6](rng)
        assert forgery.name == "a sampling decision without ids"
        assert forgery.trace_ids == ()


def test_header_values_are_sendable_ascii():
    rng = random.Random(5)
    for _ in range(500):
        for name, value in forge(rng).headers.items():
            assert name.isascii() and value.isascii() and "\n" not in value and "\r" not in value
