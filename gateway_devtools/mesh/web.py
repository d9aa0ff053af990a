"""`web`: emojivoto's front end. Each API call fans out to `emoji` and `voting` as emojivoto's web does."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway_devtools.mesh import emoji, voting
from gateway_devtools.mesh.instrument import Downstream, DownstreamError, RequestTrace, request_trace

PAGE_PATH = "/"
LIST_PATH = "/api/list"
VOTE_PATH = "/api/vote"
LEADERBOARD_PATH = "/api/leaderboard"
CHOICE = "choice"
LIVE_LEADERBOARD_PATH = "/ws/leaderboard"
LEADERBOARD_SIZE = 10
# The live page checks the votes this often, and sends the leaderboard when it changed.
LIVE_INTERVAL = 1.0
# A page left open for hours would otherwise grow its session's trace by two spans a second: past this many checks,
# they are made without sampling (the session's own span still lasts it).
LIVE_TRACED_CHECKS = 20

_PAGE_FILE = Path(__file__).with_name("web.html")
_TRACE_PAGE_MARK = "{{trace_page_url}}"

_Handler = Callable[[RequestTrace, Request], Awaitable[Any]]
_Endpoint = Callable[[Request], Awaitable[Response]]


class _Failure(Exception):
    """The request fails with `status_code`; the message is the body's `error` and the SERVER span's."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def routes(emoji_service: Downstream, voting_service: Downstream, trace_page_url: str = "") -> list[BaseRoute]:
    page = _PAGE_FILE.read_text(encoding="utf-8").replace(_TRACE_PAGE_MARK, html.escape(trace_page_url))

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def list_emojis(trace: RequestTrace, request: Request) -> Any:
        return await _json(emoji_service, trace, "GET", emoji.LIST_PATH)

    async def vote(trace: RequestTrace, request: Request) -> Any:
        choice = request.query_params.get(CHOICE, "")
        if not choice:
            raise _Failure(400, f"{CHOICE} is required, e.g. {CHOICE}=:joy:")
        response = await emoji_service.request(trace, "GET", emoji.FIND_PATH, {"shortcode": choice})
        if response.status_code == 404:
            raise _Failure(400, f"no emoji with shortcode {choice!r}")
        found = _body(emoji_service, response)
        await _json(voting_service, trace, "POST", voting.VOTE_PATH, {"shortcode": choice})
        return found

    async def leaderboard(trace: RequestTrace, request: Request | None = None) -> Any:
        results = await _json(voting_service, trace, "GET", voting.RESULTS_PATH, {"limit": str(LEADERBOARD_SIZE)})
        listed = await _json(emoji_service, trace, "GET", emoji.LIST_PATH)
        unicode = {item["shortcode"]: item["unicode"] for item in listed}
        return [{**result, "unicode": unicode.get(result["shortcode"], "?")} for result in results]

    async def live_leaderboard(websocket: WebSocket) -> None:
        trace = request_trace(websocket)
        await websocket.accept()
        context = trace.context
        await websocket.send_json({"trace": {"id": f"{context.trace_id:032x}", "sampled": context.sampled}})
        untraced = RequestTrace(dataclasses.replace(context, sampled=False, debug=False))
        sent: Any = None
        checks = 0
        try:
            while True:
                checks += 1
                try:
                    board = await leaderboard(trace if checks <= LIVE_TRACED_CHECKS else untraced)
                except (_Failure, DownstreamError) as exc:
                    board = {"error": str(exc)}
                if board != sent:
                    await websocket.send_json({"leaderboard": board})
                    sent = board
                # The page sends nothing: waiting for a message is waiting for the next check, or for the close.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(websocket.receive_text(), LIVE_INTERVAL)
        except WebSocketDisconnect:
            return

    return [
        Route(PAGE_PATH, index),
        WebSocketRoute(LIVE_LEADERBOARD_PATH, live_leaderboard),
        Route(LIST_PATH, _api(list_emojis)),
        # emojivoto's vote-bot votes with GET; the page POSTs.
        Route(VOTE_PATH, _api(vote), methods=["GET", "POST"]),
        Route(LEADERBOARD_PATH, _api(leaderboard)),
    ]


def _api(handler: _Handler) -> _Endpoint:
    async def endpoint(request: Request) -> Response:
        trace = request_trace(request)
        try:
            return JSONResponse(await handler(trace, request))
        except _Failure as failure:
            trace.error = str(failure)
            return JSONResponse({"error": str(failure)}, status_code=failure.status_code)
        except DownstreamError as exc:
            trace.error = str(exc)
            return JSONResponse({"error": str(exc)}, status_code=502)

    return endpoint


async def _json(
    service: Downstream, trace: RequestTrace, method: str, path: str, params: dict[str, str] | None = None
) -> Any:
    return _body(service, await service.request(trace, method, path, params))


def _body(service: Downstream, response: httpx.Response) -> Any:
    if response.status_code != 200:
        # emojivoto's web answers 500 whatever went wrong below it.
        raise _Failure(500, f"{service.name} answered {response.status_code}: {_error_text(response)}")
    return response.json()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
