from __future__ import annotations

import pytest

from harness._versions import release


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.0.36", (2, 0, 36)), ("2.1.0b2", (2, 1, 0)), ("1.4", (1, 4, 0)), ("0.30.0+local", (0, 30, 0))],
)
def test_release_reads_what_packages_put_in_their_version(text: str, expected: tuple[int, int, int]) -> None:
    assert release(text) == expected


def test_release_refuses_what_is_not_a_version() -> None:
    with pytest.raises(ValueError, match="not a release version: 'main'"):
        release("main")
