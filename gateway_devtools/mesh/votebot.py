"""vote-bot, as emojivoto's: lists the emojis, votes (for :doughnut: 15% of the time), reads the leaderboard.

It sends no trace headers: the gateway in front of `web` starts every trace and makes every sampling decision.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

import httpx

from gateway_devtools.mesh.voting import BROKEN_CHOICE
from gateway_devtools.mesh.web import CHOICE, LEADERBOARD_PATH, LIST_PATH, VOTE_PATH

DOUGHNUT_SHARE = 0.15
REQUEST_TIMEOUT = 5.0
OK = "ok"


def pick_choice(shortcodes: Sequence[str], rng: random.Random) -> str:
    """ "Sadly, VoteBot has a sweet tooth and votes for :doughnut: 15% of the time." (emojivoto's vote-bot)"""
    if rng.random() < DOUGHNUT_SHARE or not shortcodes:
        return BROKEN_CHOICE
    return rng.choice(shortcodes)


class Tally:
    """Outcomes since the last summary: `ok`, or the path and status (or error) of a failure."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()

    def record(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def summary(self, seconds: float) -> str:
        total = sum(self.outcomes.values())
        failures = ", ".join(f"{outcome} x{count}" for outcome, count in sorted(self.outcomes.items()) if outcome != OK)
        line = f"vote-bot: {total} requests in the last {seconds:.0f}s, {self.outcomes[OK]} ok"
        return f"{line}; failed: {failures}" if failures else line

    def reset(self) -> None:
        self.outcomes.clear()


def run(
    target: str,
    interval: float,
    rounds: int | None = None,
    summary_every: float = 10.0,
    rng: random.Random | None = None,
    log: Callable[[str], None] = print,
) -> Tally:
    """Plays `rounds` rounds (forever when None), one every `interval` seconds; logs a summary now and then."""
    rng = rng or random.Random()
    tally = Tally()
    last_summary = time.monotonic()
    played = 0
    with httpx.Client(base_url=target, timeout=REQUEST_TIMEOUT, trust_env=False) as client:
        while rounds is None or played < rounds:
            started = time.monotonic()
            _play_round(client, rng, tally)
            played += 1
            if started - last_summary >= summary_every:
                log(tally.summary(started - last_summary))
                tally.reset()
                last_summary = started
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return tally


def _play_round(client: httpx.Client, rng: random.Random, tally: Tally) -> None:
    listed = _get(client, LIST_PATH, {}, tally)
    shortcodes = [item["shortcode"] for item in listed.json()] if listed is not None else []
    _get(client, VOTE_PATH, {CHOICE: pick_choice(shortcodes, rng)}, tally)
    _get(client, LEADERBOARD_PATH, {}, tally)


def _get(client: httpx.Client, path: str, params: dict[str, str], tally: Tally) -> httpx.Response | None:
    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        tally.record(f"{path} {type(exc).__name__}")
        return None
    tally.record(OK if response.status_code == 200 else f"{path} {response.status_code}")
    return response if response.status_code == 200 else None
