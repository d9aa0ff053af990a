"""Every parser of client or operator input under hypothesis: the fuzz targets of `make fuzz` (fuzz/targets.py), fed
random bytes and inputs close to valid ones. A target raises only when an invariant breaks or its parser raised."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import SEEDS, TARGETS

HEX = "0123456789abcdef"


def near(alphabet: str, pieces: list[str], max_size: int = 80) -> st.SearchStrategy[str]:
    """Text of valid pieces and characters from `alphabet`, which reaches deeper into a parser than noise does."""
    return st.lists(st.one_of(st.sampled_from(pieces), st.text(alphabet, max_size=4)), max_size=max_size // 4).map(
        "".join
    )


def lines(line: st.SearchStrategy[str], max_lines: int = 8) -> st.SearchStrategy[bytes]:
    return st.lists(line, max_size=max_lines).map(lambda items: "\n".join(items).encode("utf-8", "surrogatepass"))


TRACE_ID = "80f198ee56343ba864fe8b2a57d3eff7"
SPAN_ID = "e457b5a2e4d86bd1"
ID_PIECES = [TRACE_ID, TRACE_ID[:16], SPAN_ID, "0" * 16, "-", "1", "0", "d", "true", "00", "01", "ff", "-00-", " "]
HEADER_NAMES = [
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "traceparent",
    "tracestate",
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "l5d-dst-override",
    "te",
    "upgrade",
    "content-length",
]
HEADER_LINE = st.builds(
    lambda name, value: f"{name}: {value}",
    st.one_of(st.sampled_from(HEADER_NAMES), st.text("abcxyz-", max_size=6)),
    st.one_of(near(HEX + "-, =@", [*ID_PIECES, *HEADER_NAMES, "close", "a=b"]), st.text(max_size=20)),
)
ROUTE_FILE = near(
    "abc:/-_ \n'\"{}[]*.0123456789",
    [
        "routes:\n",
        "  - ",
        "\n    ",
        "name: ",
        "host: ",
        "path_prefix: /",
        "upstream: http://svc:80",
        "upstream: https://a.b/c",
        "sample_rate: ",
        "0.5",
        "1e9",
        "-1",
        "span_name: '{method} {path}'",
        "adaptive: {target_traces_per_second: 3}",
        "max_traces_per_second: ",
        "timeout: ",
        "tags: {a: 1}",
        "*.example.com",
        "&anchor ",
        "*anchor",
        "!!python/object ",
        "null",
        "~",
    ],
    max_size=400,
)
SETTINGS_LINE = st.builds(
    lambda name, value: f"{name}={value}",
    st.sampled_from(
        [
            "upstream_url",
            "routes_file",
            "sample_rate",
            "port",
            "admin_port",
            "workers",
            "trusted_cidrs",
            "propagation",
            "zipkin_url",
            "trust_incoming_trace",
            "reporter_queue_size",
            "reporter_queue_bytes",
            "client_header_timeout",
            "client_max_header_bytes",
            "log_level",
            "nonsense",
        ]
    ),
    near(
        "0123456789.,:/-abcfx ",
        ["http://", "https://", "10.0.0.0/8", "::1/128", "1e309", "nan", "inf", "true", "b3", "tracecontext", "-1"],
    ),
)
STRUCTURED = {
    "b3_single": near(HEX + "-d", ID_PIECES).map(str.encode),
    "b3_multi": lines(near(HEX + "-dtrue", ID_PIECES), max_lines=5),
    "traceparent": near(HEX + "-", ["00-", f"{TRACE_ID}-", f"{SPAN_ID}-", "01", "ff", "-x"]).map(str.encode),
    "tracestate": lines(
        near(
            "abz09_-*/@=, \t:;",
            ["a=b", "rojo=00f067aa0ba902b7", "x@y=1", ",", "=", "ot=", "th:", "rv:", "00112233445566", ";"],
        )
    ),
    "trace_headers": lines(HEADER_LINE, max_lines=10),
    "forwarding": lines(st.one_of(HEADER_LINE, st.sampled_from(["203.0.113.7", "", "::1"]))),
    "request_target": near("/.%25eE2fF5cC?#\\ab", ["/", "..", ".", "%2e", "%2E", "%2f", "%5c", "http://h", "*"]).map(
        str.encode
    ),
    "route_file": ROUTE_FILE.map(str.encode),
    "settings": lines(SETTINGS_LINE),
}
assert set(STRUCTURED) == set(TARGETS), "every fuzz target needs a structured strategy here"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_seeds_of_every_target_pass(name: str) -> None:
    for seed in SEEDS[name]:
        TARGETS[name](seed)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_parser_never_raises_and_keeps_its_invariants(name: str, data: st.DataObject) -> None:
    payload = data.draw(st.one_of(st.binary(max_size=300), STRUCTURED[name]), label="input")
    TARGETS[name](payload)
