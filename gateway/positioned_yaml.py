"""YAML for hand-edited files: one document, no key given twice, and the line of every key and item it holds.

PyYAML's SafeLoader keeps the last of two equal keys without a word, and its Python values forget where they were
written. Here the document is composed into nodes first, which carry their marks: duplicate keys are refused there,
and `YamlDocument.line_of` walks the nodes along a path such as ``("routes", 2, "sample_rate")`` to name its line.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class InvalidYaml(ValueError):
    """Text that is not one YAML document. ``line`` and ``column`` count from 1; 0 where PyYAML names no place."""

    def __init__(self, problem: str, line: int = 0, column: int = 0) -> None:
        super().__init__(problem)
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """The document's Python value, and its nodes, which remember where each key and item was written."""

    # Not in the repr: through aliases of aliases, a small document can stand for a huge value (billion laughs).
    data: Any = field(repr=False)
    root: yaml.Node | None = field(repr=False)
    keys: dict[yaml.Node, Any] = field(repr=False)  # the value of each key node, as its mapping has it

    def line_of(self, path: Sequence[object]) -> int:
        """The line of the key or item ``path`` leads to or, where the document stops short of it, of the last one
        it has on the way (the top of the document for the empty path; 0 for an empty document).

        Through an alias it is the line of the anchored original; through a merge key (``<<: *base``) the line of
        the key as written, whether merged or given explicitly.
        """
        node = self.root
        line = node.start_mark.line + 1 if node is not None else 0
        for part in path:
            found = self._child(node, part)
            if found is None:
                break
            where, node = found
            line = where.start_mark.line + 1
        return line

    def _child(self, node: yaml.Node | None, part: object) -> tuple[yaml.Node, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode):
            # The constructor has flattened merge keys into node.value, merged pairs first: the last equal key is
            # the one in force.
            matches = [(key, value) for key, value in node.value if key in self.keys and self.keys[key] == part]
            return matches[-1] if matches else None
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            return node.value[part], node.value[part]
        return None


def load_yaml(text: str) -> YamlDocument:
    """The single YAML document in ``text``, built as `yaml.safe_load` builds it; raises InvalidYaml."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            keys = _checked_keys(loader, root)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _invalid(exc, text) from None
    except RecursionError:
        raise InvalidYaml("nested too deeply") from None
    return YamlDocument(data, root, keys)


def _checked_keys(loader: yaml.SafeLoader, root: yaml.Node | None) -> dict[yaml.Node, Any]:
    """The value of every scalar key node, once each scalar is known to construct and no mapping repeats a key;
    raises InvalidYaml, at the scalar or the key, otherwise."""
    keys: dict[yaml.Node, Any] = {}
    seen: set[int] = set()
    pending = [root] if root is not None else []
    # Iterative, and each node once: aliases may make the node graph recursive (`&a [*a]`) or wide (billion laughs).
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and node.tag != _MERGE_TAG:
            _construct_scalar(loader, node)
        elif isinstance(node, yaml.MappingNode):
            _check_mapping(loader, node, keys)
            pending.extend(child for pair in reversed(node.value) for child in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(reversed(node.value))
    return keys


def _check_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, keys: dict[yaml.Node, Any]) -> None:
    in_mapping: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue  # '<<: *alias' merges keys that explicit ones may override; the constructor refuses a list key
        key = _construct_scalar(loader, key_node)
        if not isinstance(key, Hashable):
            continue
        if key in in_mapping:
            mark = key_node.start_mark
            raise InvalidYaml(f"found duplicate key {key!r}", mark.line + 1, mark.column + 1)
        in_mapping.add(key)
        keys[key_node] = key


def _construct_scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    # Constructed here, where its place is known, the loader keeps the value for the document. When a tag fits the
    # text but the value does not ('2024-13-01', `!!int ""`, `!!timestamp ""`), PyYAML raises whatever int(),
    # datetime(), base64 or its own regular expression match raise: any of them means this scalar cannot be read.
    try:
        return loader.construct_object(node)
    except yaml.YAMLError:
        raise
    except Exception as exc:
        problem = f"cannot read {node.value!r} as {node.tag.replace('tag:yaml.org,2002:', '!!')}"
        if isinstance(exc, ValueError | OverflowError):  # their words say what is wrong: 'month must be in 1..12'
            problem += f" ({' '.join(str(exc).split())})"
        mark = node.start_mark
        raise InvalidYaml(problem, mark.line + 1, mark.column + 1) from None


def _invalid(exc: yaml.YAMLError, text: str) -> InvalidYaml:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid"
        # A 'while parsing ...' context only says where PyYAML was; another context is the first half of the
        # sentence ("expected a single document in the stream", "but found another document").
        if exc.context and not exc.context.startswith("while "):
            problem = f"{exc.context}, {problem}"
        return InvalidYaml(problem, mark.line + 1, mark.column + 1)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return InvalidYaml(f"{exc.reason} (#x{exc.character:04x})", line, column)
    return InvalidYaml(" ".join(str(exc).split()))
