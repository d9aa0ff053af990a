"""ASGI as the gateway's flows see it: the types of an ASGI app's arguments (starlette/types.py's names), the
request's Host, which every flow routes on, and what the lifespan's startup makes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOST = b"host"

_T = TypeVar("_T")


def host_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's first Host header ("" when it has none), as ASGI gives it: latin-1."""
    for name, value in headers:
        if name == HOST:
            return value.decode("latin-1")
    return ""


def made_at_startup(resource: _T | None) -> _T:
    """``resource``, which the lifespan's startup makes: a request before it is the server's mistake."""
    if resource is None:
        raise RuntimeError("the gateway serves requests only after its lifespan startup")
    return resource
