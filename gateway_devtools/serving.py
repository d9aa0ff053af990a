"""Serving a development tool: bind before uvicorn starts, and exit 0 on SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import socket
from types import FrameType


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound now so that a "listening on" line printed next is already true (and names the
    real port when 0 asked the kernel for one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def exit_cleanly_on_stop_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn shuts down gracefully on the signal, restores this handler and raises the signal again so that the
    # process "does what it would have done": here, that is exiting with status 0.
    raise SystemExit(0)
