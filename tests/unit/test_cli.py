"""The help and the README's settings table come from the Settings fields, and must agree with them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import build_parser, package_version, settings_help
from gateway.settings import Settings, env_name

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| (`GATEWAY_[A-Z0-9_]+`(?: / `GATEWAY_[A-Z0-9_]+`)*) \|.*\| ([^|]+) \|$")


def readme_settings() -> dict[str, str]:
    """Each variable of the README's settings table, with its default as the table shows it."""
    text = README.read_text(encoding="utf-8")
    table = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for line in table.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        names = re.findall(r"`(GATEWAY_[A-Z0-9_]+)`", match[1])
        defaults = [part.strip() for part in match[2].split(" / ")]
        assert len(defaults) in (1, len(names)), line
        for index, name in enumerate(names):
            found[name] = defaults[index if len(defaults) > 1 else 0]
    return found


def as_shown(default: object) -> set[str]:
    """The ways the README may write a field's default."""
    if default is None or default == "" or default == []:
        return {"empty", "none"}
    if isinstance(default, bool):
        return {"true" if default else "false"}
    if isinstance(default, list):
        return {",".join(str(item) for item in default)}
    if isinstance(default, float) and default.is_integer():
        return {str(default), str(int(default))}
    return {str(default)}


def test_the_readme_table_lists_every_setting_and_nothing_else():
    assert sorted(readme_settings()) == sorted(env_name(name) for name in Settings.model_fields)


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_the_readme_shows_each_default_as_the_settings_have_it(name):
    cell = readme_settings()[env_name(name)]
    written = cell.split("`")[1] if cell.startswith("`") else cell.split()[0].rstrip(":,")
    assert written in as_shown(Settings.model_fields[name].get_default(call_default_factory=True)), cell


def test_the_help_lists_every_setting_with_its_description_and_default():
    text = build_parser().format_help()
    assert settings_help() in text
    for name, info in Settings.model_fields.items():
        line = next(line for line in text.splitlines() if line.split()[:1] == [env_name(name)])
        assert line.split(None, 1)[1].startswith(str(info.description)[:30])
    assert "(default: 0.5)" in text and "(default: b3multi)" in text and "(default: empty)" in text


def test_the_version_is_the_package_metadata():
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", package_version())
