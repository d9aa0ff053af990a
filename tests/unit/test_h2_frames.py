"""gateway/h2_frames.py: a client's GOAWAY frames taken out of its byte stream, however the reads split it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.h2_frames import GoAway, GoAwayFilter

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, payload: bytes, stream_id: int = 0) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, 0]) + stream_id.to_bytes(4, "big") + payload


SETTINGS = frame(0x4, b"")
HEADERS = frame(0x1, b"\x82\x86\x84", 1)
DATA = frame(0x0, b"x" * 300, 1)
GOAWAY = frame(0x7, (5).to_bytes(4, "big") + (0).to_bytes(4, "big") + b"debug data")


def run(reads: list[bytes]) -> tuple[bytes, list[GoAway]]:
    flt = GoAwayFilter()
    passed, found = b"", []
    for read in reads:
        out, goaways = flt.feed(read)
        passed += out
        found += goaways
    return passed, found


def test_bytes_without_a_goaway_pass_unchanged_and_uncopied() -> None:
    data = PREFACE + SETTINGS + HEADERS + DATA
    flt = GoAwayFilter()
    out, found = flt.feed(data)
    assert out is data and found == []


def test_a_goaway_is_taken_out_and_parsed() -> None:
    passed, found = run([PREFACE + SETTINGS + HEADERS + GOAWAY + DATA])
    assert passed == PREFACE + SETTINGS + HEADERS + DATA
    assert found == [GoAway(5, 0)]


@given(st.lists(st.integers(0, 400), max_size=12), st.booleans())
def test_any_split_of_the_reads_gives_the_same_result(cuts: list[int], with_goaway: bool) -> None:
    stream = PREFACE + SETTINGS + HEADERS + (GOAWAY if with_goaway else b"") + DATA + frame(0x7, b"")
    points = sorted({min(cut, len(stream)) for cut in cuts})
    reads = [stream[start:stop] for start, stop in zip([0, *points], [*points, len(stream)], strict=True)]
    passed, found = run(reads)
    assert passed == PREFACE + SETTINGS + HEADERS + DATA
    assert found == ([GoAway(5, 0)] if with_goaway else []) + [GoAway(0, 0)]
