"""The "Traces" tab of Locust's web UI, and `GET /traces` (the same state as JSON).

Locust's UI renders extra tabs from its template arguments (`extended_tabs`, `extended_tables`) and fills their
tables from the `extended_stats` of `GET /stats/requests`, which it polls every two seconds: the tab follows the
run live (traces judged once their spans had time to arrive) and shows the final check's verdict at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Response, jsonify, request

from loadtest.live import COLUMNS, tab_rows

if TYPE_CHECKING:
    from locust.web import WebUI

TAB = "traces"
STATS_PATH = "/stats/requests"
TRACES_PATH = "/traces"

Snapshot = Callable[[], dict[str, Any]]


def install(web_ui: WebUI, snapshot: Snapshot) -> None:
    """Adds the tab to `web_ui`, fed by `snapshot()` (see TraceRun.snapshot in loadtest/plugin.py)."""
    app = web_ui.app
    assert app is not None
    web_ui.template_args["extended_tabs"] = [{"title": "Traces", "key": TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}
    ]

    @app.after_request
    def add_trace_rows(response: Response) -> Response:
        if not request.path.endswith(STATS_PATH) or response.mimetype != "application/json":
            return response
        document = json.loads(response.get_data())
        document["extended_stats"] = [{"key": TAB, "data": tab_rows(snapshot())}]
        response.set_data(json.dumps(document))
        return response

    @app.route(TRACES_PATH)
    def traces() -> Response:
        return jsonify(snapshot())
