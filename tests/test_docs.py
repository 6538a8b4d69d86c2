"""The documentation stays navigable: the README lists every doc, no doc grows past ~400
lines, and every relative Markdown link in the README and docs/ reaches a file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_LINES = 400
# [text](target) with a target without spaces; images (![..](..)) match too, as they should
LINK = re.compile(r"\]\(([^)\s]+)\)")


def documentation_section(readme: str) -> str:
    """The README's "## Documentation" section, up to the next level-2 heading."""
    m = re.search(r"^## Documentation\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    assert m, "README.md has no '## Documentation' section"
    return m.group(1)


def relative_links(path: Path):
    """(line number, target) of every link in ``path`` that is a path, not a URL or anchor."""
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("#"):
                continue  # http:, https:, mailto: ... and in-page anchors
            yield no, target


def test_there_are_docs():
    assert len(DOCS) >= 5, DOCS


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_readme_lists_every_doc(doc):
    section = documentation_section((REPO / "README.md").read_text(encoding="utf-8"))
    assert f"docs/{doc.name}" in section, (
        f"README.md's Documentation list does not name docs/{doc.name}; add a one-line entry")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_doc_is_over_400_lines(doc):
    n = len(doc.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{doc.name} has {n} lines (at most {MAX_LINES}); split it by topic"


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_relative_links_reach_a_file(page):
    broken = [f"{page.name}:{no}: {target}" for no, target in relative_links(page)
              if not (page.parent / target.split("#", 1)[0]).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_link_checker_sees_broken_and_skips_urls(tmp_path):
    """The checker itself: a missing target is reported, URLs and anchors are not checked."""
    page = tmp_path / "p.md"
    page.write_text("[a](docs/nope.md) [b](https://x.org/y.md) [c](#top) [d](p.md#s)\n",
                    encoding="utf-8")
    assert list(relative_links(page)) == [(1, "docs/nope.md"), (1, "p.md#s")]
