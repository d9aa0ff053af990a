"""Every test that docs/promises.md names as the proof of a promise exists, so a renamed test cannot orphan one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMISES = ROOT / "docs" / "promises.md"
RELIABILITY = "R/"  # the page's shorthand for tests/reliability/

_CITATION = re.compile(r"((?:R/|tests/)[\w/]+\.py)(?:::(\w+))?")
_CODE = re.compile(r"`([^`]+)`")


def defined_tests(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)\(", path.read_text(encoding="utf-8"), re.M))


def missing_proofs(page: str, root: Path) -> list[str]:
    """Each cited test file or test that does not exist; a fragment must be part of a test in the row's last file."""
    problems = []
    for row in page.splitlines():
        if not row.startswith("|"):
            continue
        proof = row.rstrip(" |").rsplit(" | ", 1)[-1]
        last: set[str] = set()
        for code in _CODE.findall(proof):
            citation = _CITATION.fullmatch(code)
            if citation is not None:
                path = root / citation[1].replace(RELIABILITY, "tests/reliability/", 1)
                last = defined_tests(path) if path.is_file() else set()
                if not path.is_file():
                    problems.append(f"{citation[1]}: no such file")
                elif citation[2] and citation[2] not in last:
                    problems.append(f"{code}: no such test")
            elif "..." in code and not any(code.strip(".") in name for name in last):
                # A test named by a fragment of its name: `...mid_download...`, `...504`, `test_rapid_reset...`.
                problems.append(f"{code}: no test of the row's last file has that in its name")
    return problems


def test_every_test_cited_as_a_proof_exists() -> None:
    page = PROMISES.read_text(encoding="utf-8")
    assert len(_CITATION.findall(page)) > 40
    assert missing_proofs(page, ROOT) == []


def test_a_renamed_test_or_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "tests" / "reliability").mkdir(parents=True)
    (tmp_path / "tests" / "reliability" / "test_a.py").write_text(
        "def test_one():\n    pass\n\n\ndef test_two_b():\n    pass\n"
    )
    page = (
        "| promise | proved by |\n|---|---|\n"
        "| kept | `R/test_a.py::test_one`, `...two...` |\n"
        "| renamed | `R/test_a.py::test_gone` |\n"
        "| fragment gone | `R/test_a.py::test_one`, `...three...` |\n"
        "| file gone | `tests/e2e/test_none.py` (hypothesis) |\n"
    )

    assert missing_proofs(page, tmp_path) == [
        "R/test_a.py::test_gone: no such test",
        "...three...: no test of the row's last file has that in its name",
        "tests/e2e/test_none.py: no such file",
    ]
