"""The documentation's code is code the suite runs: every block is copied from docs/examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docs import snippets  # docs/snippets.py: what `nox -s docs` checks and `python docs/snippets.py` writes

ROOT = Path(__file__).parent.parent

# Output shown to the reader (```text) and shell commands (```bash) are not code to run.
CODE_LANGUAGES = {"python", "py", "toml", "ini", "cfg", "yaml", "json"}
FENCE = re.compile(r"^(```+)(\w*)[^\n]*\n.*?^\1$", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", snippets.PAGES, ids=[page.name for page in snippets.PAGES])
def test_every_code_block_is_copied_from_a_tested_file(page: Path) -> None:
    """Each Python/config block sits under a marker naming its file, and shows that file's code."""
    marked = {block.line + 1 for block in snippets.blocks(page)}  # the fence's line
    text = page.read_text()
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match[2] in CODE_LANGUAGES:
            assert line in marked, (
                f"{page.name}:{line}: a ```{match[2]} block with no `<!-- docs/examples/FILE:SECTION -->` "
                "marker above it; move the code to docs/examples and mark where it comes from"
            )
    assert snippets.stale([page]) == []


def test_a_stale_block_is_found_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snippets, "ROOT", tmp_path)
    (tmp_path / "example.py").write_text("setup = 1\n# --8<-- [start:shown]\nx = 2\n# --8<-- [end:shown]\n")
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n<!-- example.py:shown -->\n```python\nx = 1\n```\n\n<!-- example.py:gone -->\n```python\n```\n"
    )
    assert snippets.stale([page]) == [
        "page.md:3: differs from example.py:shown",
        "page.md:8: example.py has no section 'gone' (one `--8<-- [start:gone]`, then one end)",
    ]
    page.write_text(page.read_text().replace(":gone", ""))
    page.write_text(snippets.rewritten(page))
    assert page.read_text() == (
        "Text.\n\n<!-- example.py:shown -->\n```python\nx = 2\n```\n\n"
        "<!-- example.py -->\n```python\nsetup = 1\nx = 2\n```\n"
    )
    assert snippets.stale([page]) == []


def test_a_marker_without_its_block_is_reported_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blank line between marker and fence, or a fence never closed: --check fails, and a rewrite
    refuses instead of copying code over the page's prose."""
    monkeypatch.setattr(snippets, "ROOT", tmp_path)
    (tmp_path / "example.py").write_text("x = 2\n")
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- example.py -->\n\n```python\nx = 1\n```\n\n<!-- example.py -->\n```python\nx = 1\nProse.\n"
    )
    assert snippets.stale([page]) == [
        "page.md:1: no ``` fence directly under the marker",
        "page.md:7: its fenced block is never closed",
    ]
    with pytest.raises(snippets.SnippetError, match=r"page\.md:7: its fenced block is never closed"):
        snippets.rewritten(page)


def test_every_example_file_is_shown_on_a_page() -> None:
    """No example drifts out of the docs unnoticed: each *_example.py is copied somewhere."""
    shown = {Path(block.source).name for page in snippets.PAGES for block in snippets.blocks(page)}
    examples = {path.name for path in (ROOT / "docs" / "examples").glob("*_example.py")}
    assert examples - shown == set()
