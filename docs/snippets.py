"""Copy the tested code from docs/examples into the Markdown pages, or check that it is there.

A page shows code as a fenced block right under a marker naming where it comes from:

    <!-- docs/examples/quickstart/tests/test_reminders.py:test -->
    ```python
    ... the lines between `# --8<-- [start:test]` and `# --8<-- [end:test]` in that file ...
    ```

Without `:section`, the whole file (marker lines left out). The code sits in the page itself, so
a page reads complete wherever it is shown (a code-hosting site, an editor, the package index),
and the suite runs the file it came from.

    python docs/snippets.py          # rewrite every block from its file
    python docs/snippets.py --check  # exit 1, naming each stale block (nox -s docs, the test suite)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "pages").glob("*.md"))]
MARKER = re.compile(r"<!-- (?P<source>[\w./-]+?)(?::(?P<section>[\w-]+))? -->")
OPENING_FENCE = re.compile(r"(?P<fence>```+)(?P<info>.*)")
SECTION_MARK = re.compile(r"--8<-- \[(start|end):([\w-]+)\]")


class SnippetError(Exception):
    """A marker names a file or a section that does not exist, or has no fenced block under it."""


@dataclass(frozen=True)
class Block:
    """A marker and the fenced block right under it: the body is page lines [start, end)."""

    page: Path
    line: int  # the marker's, from 1
    source: str
    section: str | None
    body: str
    start: int
    end: int
    problem: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every marker of the page, with its block (or the problem that it has none)."""
    lines = page.read_text().splitlines(keepends=True)
    found = []
    for number, line in enumerate(lines):
        marker = MARKER.fullmatch(line.rstrip())
        if marker is None:
            continue
        block = Block(page, number + 1, marker["source"], marker["section"], "", number + 2, number + 2)
        opening = OPENING_FENCE.fullmatch(lines[number + 1].rstrip()) if number + 1 < len(lines) else None
        if opening is None:
            found.append(replace(block, problem="no ``` fence directly under the marker"))
            continue
        closing = next(
            (n for n in range(number + 2, len(lines)) if lines[n].rstrip() == opening["fence"]), None
        )
        if closing is None:
            found.append(replace(block, problem="its fenced block is never closed"))
            continue
        found.append(replace(block, body="".join(lines[number + 2 : closing]), end=closing))
    return found


def code_of(source: str, section: str | None, *, where: str = "") -> str:
    """The lines a marker names: a section of the file, or all of it, without the marker lines."""
    path = ROOT / source
    if not path.is_file():
        msg = f"{where}: {source} does not exist"
        raise SnippetError(msg)
    lines = path.read_text().splitlines(keepends=True)
    if section is not None:
        starts = [n for n, line in enumerate(lines) if f"--8<-- [start:{section}]" in line]
        ends = [n for n, line in enumerate(lines) if f"--8<-- [end:{section}]" in line]
        if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
            msg = (
                f"{where}: {source} has no section {section!r} (one `--8<-- [start:{section}]`, then one end)"
            )
            raise SnippetError(msg)
        lines = lines[starts[0] + 1 : ends[0]]
    code = "".join(line for line in lines if not SECTION_MARK.search(line))
    return code.strip("\n") + "\n"


def rewritten(page: Path) -> str:
    """The page with every block holding its file's code."""
    lines = page.read_text().splitlines(keepends=True)
    for block in reversed(blocks(page)):  # from the end: earlier line numbers stay valid
        if block.problem:
            msg = f"{block.where}: {block.problem}"
            raise SnippetError(msg)
        lines[block.start : block.end] = [code_of(block.source, block.section, where=block.where)]
    return "".join(lines)


def stale(pages: list[Path] = PAGES) -> list[str]:
    """Where a page's block differs from its file (or names one that does not exist, or has none)."""
    found = []
    for page in pages:
        for block in blocks(page):
            if block.problem:
                found.append(f"{block.where}: {block.problem}")
                continue
            try:
                current = code_of(block.source, block.section, where=block.where)
            except SnippetError as error:
                found.append(str(error))
                continue
            if block.body != current:
                named = block.source + (f":{block.section}" if block.section else "")
                found.append(f"{block.where}: differs from {named}")
    return found


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("Run `python docs/snippets.py` to copy the tested code into the pages.", file=sys.stderr)
        return 1 if problems else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for page in PAGES:
        text = rewritten(page)
        if text != page.read_text():
            page.write_text(text)
            print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
