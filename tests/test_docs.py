"""The documentation's code is code the suite runs: every block is included from docs/examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PAGES = sorted((DOCS / "pages").glob("*.md"))
# Output shown to the reader (```text) and shell commands (```bash) are not code to run.
CODE_LANGUAGES = {"python", "py", "toml", "ini", "cfg", "yaml", "json"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$')


def code_blocks(page: Path) -> list[tuple[str, str]]:
    return [
        (language, body) for language, body in FENCE.findall(page.read_text()) if language in CODE_LANGUAGES
    ]


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_code_block_is_included_from_a_tested_file(page: Path) -> None:
    """Each Python/config block is one `--8<--` include of a section that exists in docs/examples."""
    for language, body in code_blocks(page):
        lines = body.strip().splitlines()
        assert len(lines) == 1, (
            f"{page.name}: a ```{language} block written inline; move it to docs/examples:\n{body}"
        )
        match = SNIPPET.match(lines[0])
        assert match, f"{page.name}: not a snippet include: {lines[0]!r}"
        name, section = match.groups()
        source = DOCS / "examples" / name
        assert source.is_file(), f"{page.name}: includes {name}, which is not in docs/examples"
        if section:
            text = source.read_text()
            assert f"--8<-- [start:{section}]" in text, f"{page.name}: {name} has no section {section!r}"
            assert f"--8<-- [end:{section}]" in text, f"{page.name}: {name} does not end section {section!r}"


def test_every_example_file_is_shown_on_a_page() -> None:
    """No example drifts out of the docs unnoticed: each *_example.py is included somewhere."""
    included = {
        SNIPPET.match(line).group(1)
        for page in PAGES
        for line in page.read_text().splitlines()
        if SNIPPET.match(line)
    }  # type: ignore[union-attr]
    examples = {path.name for path in (DOCS / "examples").glob("*_example.py")}
    assert examples - included == set()
