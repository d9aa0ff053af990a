"""docs/development.md's layout of gateway/ names every module there, so that a reader finds each one by its area."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_layout_names_every_module_of_the_gateway():
    layout = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    modules = sorted(path.name for path in (ROOT / "gateway").glob("*.py") if path.name != "__init__.py")
    assert modules, "no modules found in gateway/"
    assert [name for name in modules if f"`{name}`" not in layout] == []


def test_the_layout_names_no_module_that_is_gone():
    layout = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    table = layout[layout.index("| area | pure logic | I/O |") :].split("\n\n", 1)[0]
    named = {part.split("`")[0] for part in table.split("`")[1::2] if part.endswith(".py")}
    assert sorted(name for name in named if not (ROOT / "gateway" / name).exists()) == []
