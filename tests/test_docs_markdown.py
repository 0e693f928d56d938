"""README.md and docs/*.md parse as Markdown: every fence closes, no fence's info string is prose, and
every relative link points to a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("**/*.md"))]
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_INFO = re.compile(r"^[A-Za-z0-9_+.-]*$")  # a language name, nothing else


def fence_problems(text: str) -> list[str]:
    """Unclosed fences and fences whose info string is more than one word, with their line numbers."""
    problems = []
    tokens = MarkdownIt("commonmark").parse(text)
    lines = text.splitlines()
    for tok in tokens:
        if tok.type != "fence" or tok.map is None:
            continue
        first, last = tok.map
        if not _INFO.match(tok.info.strip()):
            problems.append(f"line {first + 1}: fence info string {tok.info.strip()!r} is not a language name")
        closing = lines[last - 1] if last - 1 > first and last - 1 < len(lines) else ""
        m = _FENCE.match(closing)
        if not (m and m.group(1)[0] == tok.markup[0] and len(m.group(1)) >= len(tok.markup) and not m.group(2).strip()):
            problems.append(f"line {first + 1}: fence {tok.markup}{tok.info} is never closed")
    return problems


def link_problems(text: str, page: Path) -> list[str]:
    problems = []
    tokens = MarkdownIt("commonmark").parse(text)
    for tok in tokens:
        for child in tok.children or ():
            if child.type not in ("link_open", "image"):
                continue
            target = child.attrs.get("href") or child.attrs.get("src") or ""
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                problems.append(f"link to {target!r} (no such file)")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_parses(page):
    text = page.read_text(encoding="utf-8")
    problems = fence_problems(text) + link_problems(text, page)
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_checker_catches_unclosed_and_prose_fences():
    assert fence_problems("```bash\nls\n```\n") == []
    assert any("never closed" in p for p in fence_problems("text\n\n```python\nx = 1\n\n## Heading\n"))
    assert any("not a language name" in p
               for p in fence_problems("```python then the prose that follows\nx\n```\n"))


def test_checker_catches_dead_links(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("x")
    assert link_problems("[a](there.md) [b](https://example.org) [c](#top)", page) == []
    assert link_problems("[a](missing.md)", page) == ["link to 'missing.md' (no such file)"]
