"""Dependency versions as comparable tuples, for the few places that differ across the floors."""

from __future__ import annotations

import re


def release(version: str) -> tuple[int, int, int]:
    """``"2.0.36"`` as ``(2, 0, 36)``; pre-release and local parts are ignored (``"2.1.0b2"`` is 2.1.0)."""
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if found is None:
        msg = f"not a release version: {version!r}"
        raise ValueError(msg)
    major, minor, micro = found.groups(default="0")
    return int(major), int(minor), int(micro)
