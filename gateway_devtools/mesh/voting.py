"""`voting`: in-memory vote counts, as emojivoto's VotingService, whose vote for :doughnut: always fails."""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway_devtools.mesh.instrument import request_trace

VOTE_PATH = "/vote"
RESULTS_PATH = "/results"
BROKEN_CHOICE = ":doughnut:"
DEFAULT_RESULTS = 10


class BrokenChoiceError(Exception):
    """emojivoto's VoteDoughnut returns an error on every call, so that failed requests show up in traces."""


class Ballot:
    def __init__(self) -> None:
        self._votes: Counter[str] = Counter()

    def vote(self, shortcode: str) -> int:
        if shortcode == BROKEN_CHOICE:
            raise BrokenChoiceError(f"voting for {shortcode} is broken, as in emojivoto")
        self._votes[shortcode] += 1
        return self._votes[shortcode]

    def results(self, limit: int) -> list[tuple[str, int]]:
        """The most voted shortcodes first; ties in the order of their first vote."""
        return self._votes.most_common(limit)


def routes(ballot: Ballot) -> list[Route]:
    async def vote(request: Request) -> JSONResponse:
        shortcode = request.query_params.get("shortcode", "")
        if not shortcode:
            return JSONResponse({"error": "shortcode is required"}, status_code=400)
        try:
            votes = ballot.vote(shortcode)
        except BrokenChoiceError as exc:
            request_trace(request).error = str(exc)
            return JSONResponse({"error": str(exc)}, status_code=500)
        return JSONResponse({"shortcode": shortcode, "votes": votes})

    async def results(request: Request) -> JSONResponse:
        limit = request.query_params.get("limit", "")
        count = int(limit) if limit.isdigit() else DEFAULT_RESULTS
        return JSONResponse([{"shortcode": code, "votes": votes} for code, votes in ballot.results(count)])

    return [Route(VOTE_PATH, vote, methods=["POST"]), Route(RESULTS_PATH, results)]
