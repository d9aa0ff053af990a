"""The bodies the reporter POSTs: Zipkin v2 JSON lists or OTLP protobuf requests, gzip-compressed as they are encoded.

A batch is encoded a slice of exchanges at a time, and each slice's JSON goes straight into the batch's compressor:
the batch never exists whole as uncompressed JSON. Joining the slices first and compressing the result made three
copies of about 400 KiB per batch of 500 exchanges; each copy went to memory the allocator had just taken from the
kernel, so a sampled request cost about one page fault on top of its encoding (docs/performance.md).
"""

from __future__ import annotations

import gc
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.spans import Exchange

try:
    # ISA-L's deflate, zlib's interface: at level 1 about seven times faster than zlib's here, and it compresses
    # span JSON a little better (docs/performance.md). Its wheels cover the usual platforms; elsewhere, zlib.
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - a platform without isal's wheels
    _deflate = zlib  # type: ignore[misc]

# The gateway reports a SERVER and a CLIENT span per sampled request.
SPANS_PER_EXCHANGE = 2
# Spans repeat names, endpoints and tags: level 1 already shrinks a batch about ten times.
GZIP_LEVEL = 1
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer, as Content-Encoding: gzip needs


@dataclass(frozen=True, slots=True)
class Framing:
    """How the documents of a format join into one: a JSON list's brackets and commas, or nothing at all for
    protobuf (serialized messages concatenate into one whose repeated fields hold both)."""

    opening: bytes
    separator: bytes
    closing: bytes

    @property
    def edge(self) -> int:
        return len(self.opening)


JSON_LIST = Framing(b"[", b",", b"]")
PROTOBUF = Framing(b"", b"", b"")


class SpanEncoder(Protocol):
    """One span format: ``encode(exchanges) -> bytes`` (a whole document), and how documents join."""

    @property
    def framing(self) -> Framing: ...

    def encode(self, exchanges: Sequence[Exchange]) -> bytes: ...


class Payload:
    """Encoded spans and how many there are: a JSON list from ``encode_slice``, gzipped from ``GzipSpanList``."""

    __slots__ = ("body", "spans")

    def __init__(self, body: bytes, spans: int) -> None:
        self.body = body
        self.spans = spans


def encode_slice(exchanges: Sequence[Exchange], encoder: SpanEncoder) -> Payload:
    """The spans of a few exchanges as one document, with the garbage collector paused while it is built.

    The encoders build span dicts or messages that live only inside this call and are freed by refcount before the
    collector resumes, so they never set off a collection. Built with it running, they were most of the
    young-generation collections at rate 1.0, and each one scanned and promoted the dicts of the batch being built
    (docs/performance.md).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Payload(encoder.encode(exchanges), SPANS_PER_EXCHANGE * len(exchanges))
    finally:
        if enabled:
            gc.enable()


class GzipSpanList:
    """One gzip-compressed document of spans (a JSON list by default), built from documents added one after another.

    ``json_bytes`` is the document's size once uncompressed, whatever its format.
    """

    __slots__ = ("_compressor", "_framing", "_parts", "json_bytes", "spans")

    def __init__(self, framing: Framing = JSON_LIST) -> None:
        self._framing = framing
        self._compressor = _deflate.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        self._parts = [self._compressor.compress(framing.opening)]
        self.json_bytes = 2 * framing.edge  # the opening and closing so far
        self.spans = 0

    def add(self, document: Payload) -> None:
        """Appends the spans of ``document`` (its ``body`` a document of this framing) to this one."""
        edge = self._framing.edge
        items = memoryview(document.body)[edge : len(document.body) - edge]  # without copying
        if not items:
            return
        if self.spans and self._framing.separator:
            self._parts.append(self._compressor.compress(self._framing.separator))
            self.json_bytes += len(self._framing.separator)
        self._parts.append(self._compressor.compress(items))
        self.json_bytes += len(items)
        self.spans += document.spans

    def close(self) -> Payload:
        """The compressed document, whole; nothing can be added afterwards."""
        self._parts.append(self._compressor.compress(self._framing.closing))
        self._parts.append(self._compressor.flush())
        body = b"".join(self._parts)
        self._parts = []
        return Payload(body, self.spans)


def gzipped(json_list: bytes) -> bytes:
    """``json_list`` compressed as ``GzipSpanList`` does, for a sender that has the whole list already."""
    compressor = _deflate.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(json_list) + compressor.flush()
