"""What the gateway writes on a client's HTTP/2 connection: h2's frames, as the client's windows and the socket allow.

gateway/h2_server.py reads the connection and feeds h2; the streams (gateway/h2_stream.py) write their responses
through a `FrameSender`, their StreamConnection. A stream whose frame h2 refuses (reset meanwhile) is handed back to
the protocol to forget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h2.connection
import h2.errors
import h2.exceptions
import hyperframe.frame

from gateway.h2_limits import connection_window_increment, count_reset, server_settings
from gateway.h2_request import Headers, Refusal


class FrameSender:
    def __init__(self, connection: h2.connection.H2Connection, forget: Callable[[int], None]) -> None:
        self._h2 = connection
        self._forget = forget
        self.transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        # Since when the transport's buffer has been full (the send timeout's clock for the whole connection).
        self.paused_at: float | None = None

    def start(self, transport: asyncio.Transport, max_streams: int, max_header_bytes: int) -> None:
        """The connection preface: the gateway's SETTINGS, and a connection window with room for every stream's."""
        self.transport = transport
        self._h2.local_settings = server_settings(max_streams, max_header_bytes)
        self._h2.initiate_connection()
        if extra := connection_window_increment(max_streams):
            self._h2.increment_flow_control_window(extra)
        self.flush()

    def pause(self, now: float) -> None:
        self._writable.clear()
        self.paused_at = now

    def resume(self) -> None:
        self._writable.set()
        self.paused_at = None

    def lost(self) -> None:
        self._writable.set()
        self.transport = None

    def flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def go_away(self, code: h2.errors.ErrorCodes = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """GOAWAY with `code`, after the last stream the client opened; h2 then sends no frame of any stream."""
        try:
            self._h2.close_connection(code, last_stream_id=self._h2.highest_inbound_stream_id)
        except h2.exceptions.H2Error:
            pass
        self.flush()

    def go_away_beside_streams(self) -> None:
        """GOAWAY while the streams in flight go on: written beside h2, which would stop their frames after its own.
        Streams the client opens from now on are refused (REFUSED_STREAM, safe to retry elsewhere)."""
        self.flush()
        if self.transport is not None:
            goaway = hyperframe.frame.GoAwayFrame(last_stream_id=self._h2.highest_inbound_stream_id)
            self.transport.write(goaway.serialize())

    def reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            return
        count_reset("gateway")
        self.flush()

    def refuse(self, stream_id: int, refusal: Refusal) -> None:
        """Answers the stream itself: the refusal's status and its one line."""
        body = f"{refusal.message}\n".encode()
        headers = [
            (b":status", str(refusal.status.value).encode()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        try:
            self._h2.send_headers(stream_id, headers)
            self._h2.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.H2Error:
            self.reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)

    # --- the streams' StreamConnection (gateway/h2_stream.py) ---

    def acknowledge(self, stream_id: int, size: int) -> None:
        try:
            self._h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.H2Error:
            return
        self.flush()

    def send_headers(self, stream_id: int, headers: Headers, *, end_stream: bool) -> None:
        self._send(self._h2.send_headers, stream_id, headers, end_stream)

    def send_window(self, stream_id: int) -> int:
        try:
            window = self._h2.local_flow_control_window(stream_id)
        except h2.exceptions.H2Error:
            return 0
        return min(window, self._h2.max_outbound_frame_size)

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        self._send(self._h2.send_data, stream_id, data, end_stream)

    async def writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def _send(self, send: Callable[..., None], stream_id: int, payload: Headers | bytes, end_stream: bool) -> None:
        try:
            send(stream_id, payload, end_stream=end_stream)
        except h2.exceptions.H2Error:
            self._forget(stream_id)
            return
        self.flush()
