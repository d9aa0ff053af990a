"""Fixtures shared by the in-process request-flow tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["httptools", "aiohttp", "httpx"])
def upstream_client(request: pytest.FixtureRequest) -> str:
    """Every implementation of the upstream seam must behave the same."""
    return str(request.param)
