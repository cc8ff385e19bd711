"""The public namespace is deliberate: every name is listed, documented and importable."""

from __future__ import annotations

import harness


def test_all_is_complete() -> None:
    """__all__ lists exactly the classes and functions harness exports (ruff RUF022 keeps it sorted)."""
    public = {
        name
        for name, value in vars(harness).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("harness.")
    }
    assert set(harness.__all__) == public | {"__version__"}


def test_every_public_name_has_a_docstring() -> None:
    """Each exported class and function explains itself."""
    undocumented = [
        name for name in harness.__all__ if name != "__version__" and not getattr(harness, name).__doc__
    ]
    assert undocumented == []


def test_version_is_the_installed_distribution_version() -> None:
    """__version__ comes from the package metadata."""
    from importlib.metadata import version

    assert harness.__version__ == version("harness")
