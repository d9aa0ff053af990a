"""The demo's live leaderboard: vote counts pushed over a WebSocket, the session one trace with web's SERVER span."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from tests.integration.mesh.conftest import VOTE, MeshFactory, b3
from tests.integration.mesh.traces import ZipkinReader, assert_connected, service, services


def test_the_live_leaderboard_pushes_votes_and_its_session_joins_the_callers_trace(
    start_mesh: MeshFactory, zipkin: ZipkinReader
) -> None:
    mesh = start_mesh()
    assert mesh.get(VOTE).status_code == 200
    headers, trace_id, caller_span = b3()

    async def session() -> list[dict[str, object]]:
        url = mesh.web_url.replace("http://", "ws://") + "/ws/leaderboard"
        async with connect(url, additional_headers=headers) as ws:
            return [json.loads(await ws.recv()) for _ in range(2)]

    first, second = asyncio.run(asyncio.wait_for(session(), 30))
    assert first == {"trace": {"id": trace_id, "sampled": True}}
    assert second["leaderboard"] == [{"shortcode": ":joy:", "votes": 1, "unicode": "😂"}]

    # web's SERVER span for the session, and its first check's calls to voting and emoji (CLIENT and SERVER each).
    spans = zipkin.wait_for_trace(trace_id, 5)
    root = assert_connected(spans, root_parent=caller_span)
    assert (service(root), root["kind"], root["name"]) == ("web", "SERVER", "get /ws/leaderboard")
    assert root["tags"]["http.status_code"] == "101"
    assert services(spans) == {"web", "emoji", "voting"}
