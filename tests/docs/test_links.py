"""Every relative link in the README and docs/ leads to a file that exists, and to a heading that exists in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The docs the README leads to, and the READMEs beside the code that link back into them.
DOCUMENTS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / part / "README.md" for part in ("bench", "deploy", "loadtest")),
    ]
)

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_INDENTED_CODE = re.compile(r"^(?: {4}|\t).*$", re.M)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where a link is a link."""
    without_blocks = _INDENTED_CODE.sub("", _FENCE.sub("", markdown))
    return _CODE_SPAN.sub("", without_blocks)


def relative_links(markdown: str) -> list[str]:
    """The targets of the inline links and images that point into the repository."""
    return [target for target in _LINK.findall(prose(markdown)) if not _SCHEME.match(target)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lowercase, without punctuation, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(document: Path) -> list[str]:
    """Each link of the document whose file or heading does not exist, with what is wrong."""
    problems = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading with that anchor")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_an_existing_file_and_heading(document: Path) -> None:
    assert broken_links(document) == []


def test_the_readme_links_to_every_document_in_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(readme)}
    assert sorted(path.name for path in (ROOT / "docs").glob("*.md") if path not in linked) == []


def test_a_missing_file_and_a_missing_heading_are_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Shutdown and drain\n\n## Shutdown and drain\n")
    page = tmp_path / "page.md"
    page.write_text(
        "See [gone](gone.md), [fine](other.md#shutdown-and-drain), [repeat](other.md#shutdown-and-drain-1),\n"
        "[no such heading](other.md#shutdown), [self](#title), ![image](other.md) and [web](https://example.com/x).\n"
        "`[code](gone.md)` and\n\n```\n[fenced](gone.md)\n```\n\n    [indented](gone.md)\n\n# Title\n"
    )

    assert broken_links(page) == [
        "gone.md: no such file",
        "other.md#shutdown: no heading with that anchor",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("TLS (HTTPS)", "tls-https"),
        ("Metrics (`GET :9901/metrics`)", "metrics-get-9901metrics"),
        ("gRPC calls keep gRPC's semantics through the gateway", "grpc-calls-keep-grpcs-semantics-through-the-gateway"),
        ("Sizing: workers per pod", "sizing-workers-per-pod"),
        ("See [Routes](routes.md)", "see-routes"),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
