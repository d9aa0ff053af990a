"""A raw HTTP/2 client on a blocking socket, for the frames real clients never send: resets, floods, windows.

curl and httpx cover the ordinary; this one lets a test send exactly the frames it means to, and see every frame
the gateway answers with (trailers, RST_STREAM, GOAWAY and its error code).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

from tests.support import LOOPBACK

GOAWAY_FRAME = 0x7


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    error_code: int


@dataclass
class StreamSeen:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # the error code of an RST_STREAM from the server
    data_frames: int = 0
    header_frames: int = 0
    unacknowledged: int = 0

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class RawH2:
    def __init__(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str = "localhost",
        settings: dict[int, int] | None = None,
        read_body: bool = True,
    ) -> None:
        sock = socket.create_connection((LOOPBACK, port), timeout=10)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        if settings:
            self.conn.update_settings(settings)
        self.conn.initiate_connection()
        # A wide connection window: which stream the client leaves unread is then the test's choice alone.
        self.conn.increment_flow_control_window(1 << 24)
        # Whether received DATA is acknowledged (a client that reads its responses) or left to fill the window.
        self.read_body = read_body
        self.streams: dict[int, StreamSeen] = {}
        self.unread: set[int] = set()  # streams whose DATA this client leaves unacknowledged
        self.goaway: GoAway | None = None
        self._pending = b""
        self.closed = False  # the server closed the connection (or reset it)
        self.eof = False  # and everything it sent has been read
        self.remote_settings: dict[int, int] = {}
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True  # the server closed: what it sent before is still read by receive()

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        end_stream: bool = True,
        authority: str = "gateway.test",
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path), *headers]
        self.conn.send_headers(stream_id, fields, end_stream=end_stream and body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end_stream)
        self.streams[stream_id] = StreamSeen()
        self.flush()
        return stream_id

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id, 8)  # CANCEL
        self.flush()

    def receive(self, timeout: float = 10.0) -> bool:
        """Reads once (up to `timeout`) and handles what came; False when the server closed the connection."""
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except OSError:  # a reset, or TLS torn down
            data = b""
        if not data:
            self.closed = self.eof = True
            return False
        self._pending += data
        for event in self.conn.receive_data(self._frames_for_h2()):
            self._handle(event)
        self.flush()
        return True

    def _frames_for_h2(self) -> bytes:
        """The whole frames received so far, less GOAWAY: h2 closes its client at a GOAWAY and would take no more
        frames of the streams the server goes on to finish (real clients, nghttp2's, do)."""
        passed = bytearray()
        pending = self._pending
        while len(pending) >= 9:
            end = 9 + int.from_bytes(pending[:3], "big")
            if len(pending) < end:
                break
            frame, pending = pending[:end], pending[end:]
            if frame[3] == GOAWAY_FRAME:
                last_stream_id = int.from_bytes(frame[9:13], "big") & 0x7FFF_FFFF
                self.goaway = GoAway(last_stream_id, int.from_bytes(frame[13:17], "big"))
            else:
                passed += frame
        self._pending = pending
        return bytes(passed)

    def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return condition()
            self.receive(min(left, 1.0))
        return True

    def response(self, stream_id: int, timeout: float = 10.0) -> StreamSeen:
        seen = self.streams[stream_id]
        assert self.until(lambda: seen.done, timeout), f"stream {stream_id} unfinished: {seen}"
        return seen

    def close(self) -> None:
        self.sock.close()

    def _handle(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.headers = list(event.headers or [])
            stream.header_frames += 1
        elif isinstance(event, h2.events.DataReceived) and stream is not None:
            stream.body += event.data or b""
            stream.data_frames += 1
            if self.read_body and event.stream_id not in self.unread:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                stream.unacknowledged += event.flow_controlled_length
        elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
            stream.trailers = list(event.headers or [])
            stream.header_frames += 1
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset = int(event.error_code or 0)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.remote_settings[int(code)] = change.new_value

    def read_again(self, stream_id: int) -> None:
        """Reads what was left unread on `stream_id`, and what comes next: its window opens again."""
        self.unread.discard(stream_id)
        seen = self.streams[stream_id]
        if seen.unacknowledged:
            self.conn.acknowledge_received_data(seen.unacknowledged, stream_id)
            seen.unacknowledged = 0
            self.flush()

    def send_body(self, stream_id: int, body: bytes, *, end_stream: bool = True, wait: float = 10.0) -> int:
        """Sends as much of `body` as the server's windows allow, waiting up to `wait` for them to open; how much."""
        sent = 0
        deadline = time.monotonic() + wait
        while sent < len(body):
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > deadline or self.closed:
                    break
                self.receive(0.2)
                continue
            chunk = body[sent : sent + window]
            sent += len(chunk)
            self.conn.send_data(stream_id, chunk, end_stream=end_stream and sent == len(body))
            self.flush()
        return sent


MAX_CONCURRENT_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
MAX_HEADER_LIST_SIZE = h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE
INITIAL_WINDOW_SIZE = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
