"""Reading a route file: its YAML, checked against the schema, as `Route` values.

Every problem is one line that names the file, the line and the entry, as a compiler would:
``routes.yaml:7: routes[2].sample_rate: must be within [0.0, 1.0] (got 1.5)``. Of several problems, the first in
the file is named; an unknown key before another problem on its line, since it is most often a misspelt key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from gateway.positioned_yaml import InvalidYaml, YamlDocument, load_yaml
from gateway.route_schema import KEY_NAME_ERROR, Expect, Location, RouteFile, find_conflict, kind
from gateway.routes import Route

_UNKNOWN_KEY_ERRORS = frozenset({"extra_forbidden", "invalid_key"})
# What a type error says a key must be, where the key has no `Expect` of its own.
_EXPECTED = {
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "float_type": "a number",
}
# Type errors where a list or mapping was due.
_CONTAINER_ERRORS = frozenset({"model_type", "dict_type", "list_type"})


class RouteFileError(ValueError):
    """A route file that cannot be used; the message is one line naming the file, the line and the entry."""


def load_routes(path: Path) -> list[Route]:
    """Read and validate a route file; every problem raises RouteFileError naming the file, line and entry."""
    return parse_routes(read_route_file(path), path)


def read_route_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RouteFileError(f"{path}: cannot read route file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RouteFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def parse_routes(text: str, source: Path | str) -> list[Route]:
    """Validate the text of a route file; ``source`` names it in errors (``routes.yaml:7: routes[2]...``)."""
    try:
        document = load_yaml(text)
    except InvalidYaml as exc:
        where = f"{source}:{exc.line}:{exc.column}" if exc.line else str(source)
        raise RouteFileError(f"{where}: invalid YAML: {exc}") from None
    try:
        routes = [entry.to_route() for entry in RouteFile.model_validate(document.data).routes]
    except ValidationError as exc:
        line, message = _first_problem(exc.errors(), document)
        raise RouteFileError(_located(source, line, message)) from None
    if conflict := find_conflict(routes):
        location, message = conflict
        raise RouteFileError(_located(source, document.line_of(location), message))
    return routes


def _located(source: Path | str, line: int, message: str) -> str:
    return f"{source}:{line}: {message}" if line else f"{source}: {message}"


def _first_problem(errors: Sequence[ErrorDetails], document: YamlDocument) -> tuple[int, str]:
    problems = []
    for order, error in enumerate(errors):
        location, message = _describe(error)
        line = document.line_of(location) if location else 0
        problems.append((line, error["type"] not in _UNKNOWN_KEY_ERRORS, order, message))
    line, _, _, message = min(problems)
    return line, message


def _describe(error: ErrorDetails) -> tuple[Location, str]:
    """Where an error is (the path to its key or item) and what it says, as the file's reader needs it."""
    location: Location = tuple(error["loc"])
    error_type = error["type"]
    if location and location[-1] == "[key]":  # a problem with a mapping's key, not its value
        location = location[:-2] if error_type == KEY_NAME_ERROR else location[:-1]
    if not location and error_type == "model_type":
        return location, f"expected a mapping with a 'routes' list at the top level (got {kind(error['input'])})"
    if error_type in _UNKNOWN_KEY_ERRORS:
        parent, key = location[:-1], location[-1]
        model, _ = _schema_at(parent)
        allowed = ", ".join(sorted(model.model_fields)) if model is not None else ""
        if not parent:
            return location, f"unknown top-level key {str(key)!r} (allowed: {allowed})"
        return location, f"{_path(parent)}: unknown key {str(key)!r} (allowed: {allowed})"
    _, field = _schema_at(location)
    return location, f"{_path(location)}: {_what(error, field.metadata if field is not None else [])}"


def _what(error: ErrorDetails, metadata: list[Any]) -> str:
    error_type, got = error["type"], error["input"]
    if error_type == "missing":
        return "is required"
    if error_type == "value_error":
        return str(error.get("ctx", {})["error"])
    if error_type == KEY_NAME_ERROR:
        return error["msg"]
    if error_type in _EXPECTED:
        expected = next((item.what for item in metadata if isinstance(item, Expect)), _EXPECTED[error_type])
        return f"must be {expected} (got {_shown(got, named=error_type in _CONTAINER_ERRORS)})"
    if error_type in ("greater_than_equal", "less_than_equal"):
        # Every bounded key has a minimum; the message gives the whole range, whichever end was crossed.
        minimum = next(item.ge for item in metadata if hasattr(item, "ge"))
        maximum = next((item.le for item in metadata if hasattr(item, "le")), None)
        bounds = f"within [{minimum}, {maximum}]" if maximum is not None else f"{minimum} or more"
        return f"must be {bounds} (got {got!r})"
    if error_type == "finite_number":
        return f"must be a finite number (got {got!r})"
    return f"{error['msg']} (got {_shown(got)})"


def _shown(got: Any, *, named: bool = False) -> str:
    # A scalar is shown ('got 8080'); a list or mapping, which may be long, is named ('got a list'), and so is
    # whatever stands where a list or mapping was due ('got a string').
    return kind(got) if named or got is None or isinstance(got, list | dict) else repr(got)


def _schema_at(location: Location) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that what ``location`` leads to is checked against (None for a tag), and the field that
    ``location`` names (None for an item of a list or of the tags)."""
    model: type[BaseModel] | None = RouteFile
    field: FieldInfo | None = None
    for part in location:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            field = model.model_fields[part]
            model = _model_in(field.annotation)
        else:
            field = None  # an item of a list keeps the model of the items
    return model, field


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((model for arg in get_args(annotation) if (model := _model_in(arg)) is not None), None)


def _path(location: Location) -> str:
    """``routes[2].adaptive.interval``: items by index, keys by name."""
    parts = [f"[{part}]" if isinstance(part, int) else f".{part}" for part in location]
    return "".join(parts).removeprefix(".")
