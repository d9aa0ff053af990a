"""What one client's HTTP/2 connection may use, and where this process counts its streams and resets.

The limits are set per worker (`configure_http2`, from gateway/edge.py) and read by every new connection of
gateway/h2_server.py: the streams open at once, the keep-alive, the receive windows and the budgets for resets,
PINGs and SETTINGS that a flood would overrun.
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.settings
from prometheus_client import Counter

from gateway.metrics import HTTP2_RESETS_BY, Metrics
from gateway.settings import Settings

# The per-stream receive window, which is also the most request body a stream buffers.
STREAM_WINDOW = 65_535
# The connection's receive window (RFC 9113 6.9.2): enough for every stream's window, up to this.
MAX_CONNECTION_WINDOW = 16 * 1024 * 1024
# The window every connection starts with, before a WINDOW_UPDATE (RFC 9113 6.9.2).
INITIAL_CONNECTION_WINDOW = 65_535
# Resets by the client of streams it opened (CVE-2023-44487 "rapid reset"), PINGs and SETTINGS: at once, per second.
RESET_BUDGET = (200.0, 100.0)
CONTROL_FRAME_BUDGET = (100.0, 20.0)


@dataclass(frozen=True, slots=True)
class Http2Limits:
    max_concurrent_streams: int = 100
    keepalive_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Http2Limits:
        return cls(settings.http2_max_concurrent_streams, settings.client_keepalive_timeout)


class _Http2:
    def __init__(self) -> None:
        self.limits = Http2Limits()
        self.streams: Counter | None = None
        self.resets: dict[str, Counter] = {}


_http2 = _Http2()


def configure_http2(limits: Http2Limits, metrics: Metrics | None) -> None:
    _http2.limits = limits
    if metrics is not None:
        _http2.streams = metrics.http2_streams
        _http2.resets = {by: metrics.http2_resets.labels(by) for by in HTTP2_RESETS_BY}


def current_http2_limits() -> Http2Limits:
    return _http2.limits


def count_stream() -> None:
    if _http2.streams is not None:
        _http2.streams.inc()


def count_reset(by: str) -> None:
    """Counts a stream reset by `by`: "client" or "gateway" (metrics.HTTP2_RESETS_BY)."""
    counter = _http2.resets.get(by)
    if counter is not None:
        counter.inc()


def server_settings(max_streams: int, max_header_bytes: int) -> h2.settings.Settings:
    """The SETTINGS the gateway sends a client: its limits, and no server push."""
    return h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        },
    )


def connection_window_increment(max_streams: int) -> int:
    """How much the connection's receive window grows at the start (0: it stays at the initial window)."""
    return max(0, min(MAX_CONNECTION_WINDOW, max_streams * STREAM_WINDOW) - INITIAL_CONNECTION_WINDOW)
