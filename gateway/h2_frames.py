"""A client's GOAWAY frames, taken out of its byte stream before h2 sees them.

h2 closes its connection state at a GOAWAY from the peer and will send no further frame, yet RFC 9113 6.8 lets the
streams the client already opened finish: a client that says it is going away still waits for their responses.
So the GOAWAY is read here, the gateway stops taking streams, and h2 goes on serving the ones in flight.
Values in, values out: gateway/h2_server.py feeds every read through `GoAwayFilter.feed`.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFACE_LENGTH = 24
FRAME_HEADER_LENGTH = 9
GOAWAY = 0x7
_GOAWAY_FIELDS = 8  # last stream id and error code; debug data follows and is dropped


@dataclass(frozen=True, slots=True)
class GoAway:
    last_stream_id: int
    error_code: int


class GoAwayFilter:
    """Passes a client's bytes on unchanged but for its GOAWAY frames, which it returns parsed."""

    def __init__(self) -> None:
        self._preface_left = PREFACE_LENGTH
        self._header = b""
        self._payload_left = 0  # of the frame being passed on
        self._goaway_left = 0  # of the GOAWAY frame being taken out
        self._goaway = b""

    def feed(self, data: bytes) -> tuple[bytes, list[GoAway]]:
        passed: list[bytes] = []
        found: list[GoAway] = []
        # Whether what passes differs from `data`: a GOAWAY taken out, or a frame header held back until whole (it
        # may be a GOAWAY's) or completed from one held back.
        removed = bool(self._header)
        at, end = 0, len(data)
        while at < end:
            if self._preface_left:
                taken = min(self._preface_left, end - at)
                passed.append(data[at : at + taken])
                self._preface_left -= taken
            elif self._payload_left:
                taken = min(self._payload_left, end - at)
                passed.append(data[at : at + taken])
                self._payload_left -= taken
            elif self._goaway_left:
                taken = min(self._goaway_left, end - at)
                self._goaway += data[at : at + taken][: _GOAWAY_FIELDS - len(self._goaway)]
                self._goaway_left -= taken
                removed = True
                if not self._goaway_left:
                    found.append(_parse(self._goaway))
            else:
                taken = min(FRAME_HEADER_LENGTH - len(self._header), end - at)
                self._header += data[at : at + taken]
                if len(self._header) == FRAME_HEADER_LENGTH:
                    self._frame_started(self._header, passed, found)
                    removed = removed or self._header[3] == GOAWAY
                    self._header = b""
            at += taken
        if not removed and not self._header:
            return data, found
        return b"".join(passed), found

    def _frame_started(self, header: bytes, passed: list[bytes], found: list[GoAway]) -> None:
        length = int.from_bytes(header[:3], "big")
        if header[3] != GOAWAY:
            passed.append(header)
            self._payload_left = length
            return
        self._goaway = b""
        self._goaway_left = length
        if not length:
            found.append(_parse(b""))


def _parse(payload: bytes) -> GoAway:
    # A short GOAWAY is malformed; read as "no stream processed, no error" it still means the client is leaving.
    payload = payload.ljust(_GOAWAY_FIELDS, b"\0")
    return GoAway(int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF, int.from_bytes(payload[4:8], "big"))
