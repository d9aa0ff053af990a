"""`python -m tests.grpc.serve PORT`: the echo server in its own process, so a test can kill it by PID."""

from __future__ import annotations

import signal
import sys
import threading

from tests.grpc.servers import EchoServer


def main() -> None:
    server = EchoServer(int(sys.argv[1])).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"listening on {server.port}", flush=True)
    stop.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
