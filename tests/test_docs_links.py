"""Relative links in the README and the docs point at files that exist.

The docs cross-reference each other (scenarios.md -> impact.md, the README -> docs/), and
a moved section should break the suite rather than a reader's click.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """Targets of the page's markdown links that are files in the repository (no URLs, no
    in-page anchors), without any #fragment."""
    targets = (t.split("#")[0] for t in _LINK.findall(page.read_text()))
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


def test_the_pages_link_each_other():
    assert any(relative_links(p) for p in PAGES), "no relative links found: the pattern is broken"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"
