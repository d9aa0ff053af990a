"""A WebSocket upstream process (ws_upstream.py) and the helpers the WebSocket tests share."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway, wait_for
from tests.support import LOOPBACK, RunningProcess, free_port, python_module, running_process


@dataclass
class WsUpstream:
    process: RunningProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def events(self, token: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/events", params={"token": token}, timeout=5)
        response.raise_for_status()
        return list(response.json()["events"])

    def handshake(self, token: str) -> dict[str, list[str]]:
        """The headers of the session's upgrade request as the upstream saw them, by lowercase name."""
        assert wait_for(lambda: any(event["type"] == "handshake" for event in self.events(token)))
        event = next(event for event in self.events(token) if event["type"] == "handshake")
        headers: dict[str, list[str]] = {}
        for name, value in event["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        return headers

    def closed(self, token: str) -> dict[str, Any]:
        """How the upstream's side of the session ended (waits for it)."""
        assert wait_for(lambda: any(event["type"] == "closed" for event in self.events(token)), timeout=15)
        return next(event for event in self.events(token) if event["type"] == "closed")


@contextlib.contextmanager
def running_ws_upstream(log_dir: Path) -> Iterator[WsUpstream]:
    port = free_port()
    args = python_module("tests.e2e.ws_upstream", "--port", str(port))
    with running_process(args, log_dir / "ws-upstream.log", wait_ports=[port]) as process:
        yield WsUpstream(process, port)


@pytest.fixture(scope="session")
def ws_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WsUpstream]:
    with running_ws_upstream(tmp_path_factory.mktemp("ws-upstream")) as running:
        yield running


def ws_url(gateway: Gateway, path: str) -> str:
    return f"ws://{LOOPBACK}:{gateway.port}{path}"


def new_token() -> str:
    return secrets.token_hex(8)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))
