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

    assert harness.__version__ == version("pytest-async-harness")


def _documented_objects() -> list[object]:
    """What the API reference (docs/pages/api.md) documents, from its `::: path` entries."""
    import importlib
    import re
    from pathlib import Path

    lines = (Path(__file__).parents[1] / "docs" / "pages" / "api.md").read_text().splitlines()
    found: list[object] = []
    for number, line in enumerate(lines):
        if not line.startswith("::: "):
            continue
        path = line.removeprefix("::: ").strip()
        members: list[str] | None = None
        if number + 1 < len(lines) and lines[number + 1].strip() == "options:":
            listed = re.fullmatch(r"members: (?:\[(.*)\]|false)", lines[number + 2].strip())
            assert listed is not None, f"api.md: {path}: options without a members list"
            members = [name.strip() for name in listed.group(1).split(",")] if listed.group(1) else []
        try:
            module = importlib.import_module(path)
        except ImportError:  # the path names an object in a module, or a class's attribute
            module_name, _, name = path.rpartition(".")
            try:
                found.append(getattr(importlib.import_module(module_name), name))
            except ImportError:
                class_path, _, attribute = module_name.rpartition(".")
                found.append(getattr(getattr(importlib.import_module(class_path), attribute), name))
            continue
        everything = getattr(module, "__all__", [name for name in vars(module) if not name.startswith("_")])
        found.extend(getattr(module, name) for name in (members if members is not None else everything))
    return found


def test_the_plugin_uses_only_public_documented_names() -> None:
    """The pytest plugin is a thin adapter over the library: every harness name it imports is in its
    module's __all__ and in the API reference, and it reaches into nothing private, so a conftest.py
    written by hand (or a unittest suite) can do whatever a fixture does."""
    import ast
    import importlib
    import inspect

    import harness.plugin

    tree = ast.parse(inspect.getsource(harness.plugin))
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness"
        for alias in node.names
    ]
    assert ("harness.db", "TestDatabase") in imported  # the check sees the plugin's imports
    whole_modules = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.split(".")[0] == "harness"
    ]
    assert whole_modules == [], "import names, not modules, so that each one is checked below"
    private = [
        f"{module}.{name}" for module, name in imported if name not in importlib.import_module(module).__all__
    ]
    assert private == [], "the plugin imports names its modules do not export"
    documented = _documented_objects()
    undocumented = [
        f"{module}.{name}"
        for module, name in imported
        if not any(getattr(importlib.import_module(module), name) is obj for obj in documented)
    ]
    assert undocumented == [], "the plugin imports names the API reference does not document"
    reached_into = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
    ]
    assert set(reached_into) <= {"sys._getframe"}  # fixtures land in the module that registers them
