"""An HTTP listener served from a thread of the main process, beside uvicorn: the admin and the redirect listeners.

The process that starts uvicorn owns these sockets, so with several workers one socket serves every worker and the
workers do not compete for the port.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# How long `stop` waits for the serving thread (a daemon: the process may exit without it).
STOP_WAIT_SECONDS = 5.0


class ThreadedListener:
    """`handler` served on (host, port) by http.server's threading server, in a daemon thread named `name`."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_WAIT_SECONDS)
