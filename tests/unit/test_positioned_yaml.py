from __future__ import annotations

import datetime
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.positioned_yaml import InvalidYaml, load_yaml

DOCUMENT = """\
routes:
  - &web
    upstream: http://web
    tags:
      team: web
  - <<: *web
    path_prefix: /vote
    upstream: http://vote
  - [a, b]
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        pytest.param((), 1, id="top"),
        pytest.param(("routes",), 1, id="key"),
        pytest.param(("routes", 0), 2, id="item"),
        pytest.param(("routes", 0, "tags", "team"), 5, id="nested-key"),
        pytest.param(("routes", 1), 6, id="merging-item"),
        pytest.param(("routes", 1, "tags"), 4, id="merged-key-at-its-anchor"),
        pytest.param(("routes", 1, "upstream"), 8, id="explicit-key-over-merged"),
        pytest.param(("routes", 2, 1), 9, id="flow-item"),
        pytest.param(("routes", 0, "timeout"), 2, id="absent-key-gives-its-mapping"),
        pytest.param(("routes", 7, "upstream"), 1, id="absent-item-gives-its-list"),
        pytest.param(("routes", 2, "x"), 9, id="key-into-a-list"),
        pytest.param(("routes", 0, "upstream", "x"), 3, id="beyond-a-scalar"),
    ],
)
def test_line_of_names_the_key_or_item_a_path_leads_to(path, line):
    assert load_yaml(DOCUMENT).line_of(path) == line


def test_the_data_is_what_safe_load_builds():
    assert load_yaml(DOCUMENT).data == yaml.safe_load(DOCUMENT)


def test_an_empty_document_is_none_and_has_no_line():
    document = load_yaml("# nothing here\n")
    assert document.data is None
    assert document.line_of(()) == 0
    assert document.line_of(("routes",)) == 0


def test_keys_are_found_by_value_whatever_their_spelling():
    document = load_yaml("a: 1\n0x10: hex\n'b': quoted\n")
    assert document.data == {"a": 1, 16: "hex", "b": "quoted"}
    assert (document.line_of((16,)), document.line_of(("b",))) == (2, 3)


@pytest.mark.parametrize(
    ("text", "problem", "line", "column"),
    [
        ("a: 1\nb: 2\na: 3\n", "found duplicate key 'a'", 3, 1),
        ("outer:\n  x: 1\n  0x1: 2\n  x: 3\n", "found duplicate key 'x'", 4, 3),
        ("{1: a, 0x1: b}\n", "found duplicate key 1", 1, 8),
        ("a: 1\n---\nb: 2\n", "expected a single document in the stream, but found another document", 2, 1),
        ("a: [1\n", "expected ',' or ']', but got '<stream end>'", 2, 1),
        ("a: 2024-13-45\n", "cannot read '2024-13-45' as !!timestamp (month must be in 1..12)", 1, 4),
        ("a: !!int ''\n", "cannot read '' as !!int", 1, 4),
        ("a: !!binary ab\n", "failed to decode base64 data: Incorrect padding", 1, 4),
        (
            "a: !!python/name:os.system\n",
            "could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'",
            1,
            4,
        ),
        ("? [a]\n: b\n", "found unhashable key", 1, 3),
        ("a: \x07\n", "special characters are not allowed (#x0007)", 1, 4),
    ],
)
def test_invalid_documents_say_what_and_where(text, problem, line, column):
    with pytest.raises(InvalidYaml) as caught:
        load_yaml(text)
    assert (str(caught.value), caught.value.line, caught.value.column) == (problem, line, column)


def test_merge_keys_may_be_overridden_explicitly():
    document = load_yaml("base: &b {a: 1, b: 2}\nuse:\n  <<: *b\n  a: 3\n")
    assert document.data["use"] == {"a": 3, "b": 2}
    assert document.line_of(("use", "a")) == 4
    assert document.line_of(("use", "b")) == 1


def test_recursive_aliases_load_without_looping():
    document = load_yaml("a: &a [*a]\n")
    assert document.data["a"][0] is document.data["a"]
    assert document.line_of(("a", 0, 0, 0)) == 1


def test_many_aliases_of_aliases_are_walked_once_each():
    # Ten levels of ten aliases: a walk that followed every alias would visit 10**10 nodes. An item that is an
    # alias is where its anchor is: l9's last item is l8, whose last is l7, whose first is l6, on line 7.
    lines = ["l0: &l0 [x]"] + [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 10)]
    document = load_yaml("\n".join(lines) + "\n")
    assert document.line_of(("l9", 9, 9, 0)) == 7


def test_deep_nesting_is_invalid_not_a_crash():
    with pytest.raises(InvalidYaml, match="nested too deeply"):
        load_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n")


JSON_LIKE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.dates()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)


@given(JSON_LIKE, st.booleans())
@settings(deadline=None)  # a shared machine: a slow example says nothing about the loader
def test_every_document_loads_as_safe_load_loads_it(value, flow_style):
    text = yaml.safe_dump(value, default_flow_style=flow_style)
    loaded = load_yaml(text).data
    assert loaded == yaml.safe_load(text)


def test_special_floats_and_dates_are_constructed():
    data = load_yaml("inf: .inf\nnan: .nan\nday: 2024-01-02\n").data
    assert data["inf"] == math.inf and math.isnan(data["nan"]) and data["day"] == datetime.date(2024, 1, 2)
