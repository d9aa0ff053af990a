"""The optional cleartext listener (GATEWAY_HTTP_REDIRECT_PORT): every request gets 308 to https.

Like the admin listener it runs in a thread of the main (supervisor) process (gateway/threaded_listener.py), so
that with several workers one socket serves it and workers do not compete for the port. It answers and closes: no
body is read, no keep-alive, and a client that sends nothing is dropped after a few seconds.
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler

from gateway.https_redirect import redirect_location
from gateway.threaded_listener import ThreadedListener

SILENT_CLIENT_TIMEOUT = 10.0
REDIRECT_STATUS = 308

logger = logging.getLogger("gateway.redirect")


class RedirectServer(ThreadedListener):
    def __init__(self, host: str, port: int, https_port: int) -> None:
        super().__init__(host, port, _handler_for(https_port), name="redirect")

    def start(self) -> None:
        super().start()
        logger.info("redirecting cleartext HTTP on port %d to https", self.port, extra={"port": self.port})


def _handler_for(https_port: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SILENT_CLIENT_TIMEOUT
        protocol_version = "HTTP/1.1"

        def redirect(self) -> None:
            hosts = self.headers.get_all("Host") or []
            location = redirect_location(hosts[0] if len(hosts) == 1 else None, self.path, https_port)
            if location is None:
                self._reply(400, b"bad request: a valid Host header is required\n", None)
            else:
                self._reply(REDIRECT_STATUS, f"redirecting to {location}\n".encode(), location)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = redirect

        def _reply(self, status: int, body: bytes, location: str | None) -> None:
            self.send_response(status)
            if location is not None:
                self.send_header("Location", location)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            return None

    return Handler
