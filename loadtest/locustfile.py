"""emojivoto-style load through the gateway; when the load stops, every trace it caused is checked in the backend.

    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8080 --trace-rate 0.5

Two kinds of users: `EmojiVoter`, emojivoto's vote-bot (lists the emojis, votes, reads the leaderboard), and
`HostileClient`, which sends forged and malformed trace headers and must never decide a trace. Every response's
`traceresponse` is recorded; when the test stops, the trace backend is read back and each trace judged
(loadtest/plugin.py): a broken trace or a sampled fraction off the configured rate makes locust exit with status 1,
a check that could not run with 2. loadtest/spike.py adds a burst load shape; see loadtest/README.md.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, task

# locust puts the working directory and this file's folder on sys.path; the repository root makes `loadtest.*`
# importable from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.propagation.w3c import TRACERESPONSE, parse_traceresponse
from loadtest.hostile import forge
from loadtest.plugin import FORGED, HOSTILE  # importing it wires the trace check into locust

if os.environ.get("LOADTEST_GRPC") == "1":
    # gRPC calls beside the HTTP users, each call's trace checked like theirs (loadtest/grpc_user.py).
    from loadtest.grpc_user import EmojiGrpcCaller  # noqa: F401

# emojivoto's web API, as gateway_devtools/mesh/web.py serves it.
LIST_PATH = "/api/list"
VOTE_PATH = "/api/vote"
LEADERBOARD_PATH = "/api/leaderboard"
CHOICE = "choice"
# emojivoto's voting service fails every vote for it, on purpose: a 500 that is the expected answer.
BROKEN_CHOICE = ":doughnut:"
FALLBACK_SHORTCODES = (":joy:", ":sunglasses:", ":rocket:")


class EmojiVoter(FastHttpUser):
    """A visitor of emojivoto, as its vote-bot: browses the list most, votes for a listed emoji often, reads the
    leaderboard."""

    weight = 4
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.shortcodes = self._list() or list(FALLBACK_SHORTCODES)

    @task(3)
    def list_emojis(self) -> None:
        self._list()

    @task(2)
    def vote(self) -> None:
        choice = random.choice(self.shortcodes)
        with self.client.get(VOTE_PATH, params={CHOICE: choice}, name=VOTE_PATH, catch_response=True) as response:
            if response.status_code == 500 and choice == BROKEN_CHOICE:
                response.success()

    @task(1)
    def leaderboard(self) -> None:
        self.client.get(LEADERBOARD_PATH, name=LEADERBOARD_PATH)

    def _list(self) -> list[str]:
        with self.client.get(LIST_PATH, name=LIST_PATH, catch_response=True) as response:
            if response.status_code != 200:
                return []
            try:
                return [str(item["shortcode"]) for item in response.json()]
            except (ValueError, TypeError, KeyError):
                response.failure("the emoji list is not a JSON list of emojis")
                return []


class HostileClient(FastHttpUser):
    """A client on the internet that forges trace headers (loadtest/hostile.py) to join or force traces.

    The gateway must ignore them all: a response that announces a forged trace id, answers 5xx or carries no
    `traceresponse` is a failure, and the trace check proves that no forged id reached the backend and that these
    requests were sampled at the configured rate, no more.
    """

    weight = 1
    wait_time = between(0.2, 0.6)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task(2)
    def list_emojis(self) -> None:
        self._send(LIST_PATH)

    @task(1)
    def leaderboard(self) -> None:
        self._send(LEADERBOARD_PATH)

    def _send(self, path: str) -> None:
        forgery = forge(self.rng)
        context: dict[str, Any] = {HOSTILE: True, FORGED: forgery.trace_ids}
        with self.client.get(
            path, name=path, headers=forgery.headers, context=context, catch_response=True
        ) as response:
            if not response.status_code:
                return
            announced = parse_traceresponse(response.headers.get(TRACERESPONSE) or "")
            if response.status_code >= 500:
                response.failure(f"{forgery.name}: the gateway answered {response.status_code}")
            elif announced is None:
                response.failure(f"{forgery.name}: no valid {TRACERESPONSE} in the response")
            elif announced[0] in forgery.trace_ids:
                response.failure(f"{forgery.name}: the gateway joined the forged trace {announced[0]:032x}")
