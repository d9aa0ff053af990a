"""Route files come from ConfigMaps edited by hand: whatever YAML they hold loads, or fails with one line naming the
file (and the line, where it has one), never with a traceback."""

from __future__ import annotations

import re
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.route_file import RouteFileError, parse_routes
from gateway.route_schema import ADAPTIVE_KEYS, ROUTE_KEYS
from gateway.routes import Route

# No deadline: a YAML parse is quick, but this machine is shared and a slow example says nothing about the parser.
SOURCE = "configmap/routes.yaml"
PROBLEM = re.compile(rf"{re.escape(SOURCE)}(:(?P<line>[1-9][0-9]*)(:[1-9][0-9]*)?)?: \S.*")

KEYS = st.sampled_from(["routes", *ROUTE_KEYS, *ADAPTIVE_KEYS, "upstrem", "<<", "1", ""])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.sampled_from(["http://web", "https://api.internal/v1", "h2c", "http1", "/api", "*.example.com", "{method}"]),
    st.text(max_size=12),
    st.dates(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=25,
)
ROUTE_ENTRIES = st.dictionaries(KEYS, VALUES, max_size=6).map(lambda entry: {"upstream": "http://web", **entry})
# Pieces of hand-written YAML, joined at random: anchors, aliases, merge keys, tags, flow and block styles.
FRAGMENTS = st.sampled_from(
    [
        "routes:",
        "\n",
        "\n  - ",
        "\n    ",
        "  ",
        "- ",
        "upstream: http://web",
        "path_prefix: /a",
        "host: a.com",
        "sample_rate: ",
        "tags:",
        "adaptive:",
        "target_traces_per_second: 5",
        "&a ",
        "*a",
        "<<: *a",
        "<<: ",
        "!!int ",
        "!!binary ",
        "!!python/object ",
        "!!timestamp ",
        "2024-13-45",
        "0x",
        "{",
        "}",
        "[",
        "]",
        ", ",
        ": ",
        "? ",
        "'",
        '"',
        "#",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "\t",
        "\x07",
        "\ufeff",
        ".nan",
        "~",
        "|\n  text",
        ">-\n  text",
    ]
)


def assert_loads_or_names_the_file(text: str) -> None:
    try:
        routes = parse_routes(text, SOURCE)
    except RouteFileError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        matched = PROBLEM.fullmatch(message)
        assert matched, message
        if matched["line"]:
            assert int(matched["line"]) <= text.count("\n") + 1 + text.count("\r") + text.count("\x85"), message
    else:
        assert routes and all(isinstance(route, Route) for route in routes)


@given(st.text(max_size=200))
@settings(deadline=None)
def test_any_text_loads_or_fails_in_one_line_naming_the_file(text):
    assert_loads_or_names_the_file(text)


@given(st.lists(FRAGMENTS, max_size=30).map("".join))
@example("routes: &r [*r]\n")
@example("routes:\n  - &e {upstream: http://web, tags: *e}\n")
@example("routes:\n  - upstream: http://web\n    tags: &t {a: *t}\n")
@example("routes:\n  - upstream: http://web\n    created: 2024-13-45\n")
@example("? [a]\n: b\n")
@example("routes:\n  - {upstream: http://web, 1: x, null: y, 2024-01-01: z}\n")
@settings(max_examples=300, deadline=None)
def test_hand_written_yaml_loads_or_fails_in_one_line_naming_the_file(text):
    assert_loads_or_names_the_file(text)


@given(VALUES)
@settings(deadline=None)
def test_any_yaml_document_loads_or_fails_in_one_line_naming_the_file(document: Any):
    assert_loads_or_names_the_file(yaml.safe_dump(document))


@given(st.lists(ROUTE_ENTRIES, max_size=4), st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_list_of_routes_loads_or_fails_in_one_line_naming_the_file(entries, flow_style):
    assert_loads_or_names_the_file(yaml.safe_dump({"routes": entries}, default_flow_style=flow_style))
