"""Where the code under test called in: the first frame that is not a library's."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from types import FrameType, ModuleType

import greenlet
import sqlalchemy

_ALWAYS = (
    os.path.dirname(__file__) + os.sep,
    contextlib.__file__,
    "<",
)  # harness; generated code, <frozen …>


_STARTED_IN = os.getcwd() + os.sep  # where the run started (harness loads with pytest's plugins)


@functools.lru_cache(maxsize=256)
def shown_as(filename: str) -> str:
    """A file's name relative to the directory the run started in when inside it, as pytest shows locations."""
    return filename.removeprefix(_STARTED_IN)


class Where:
    """Finds the innermost frame of the caller's code, skipping the given libraries' frames.

    Inside SQLAlchemy's greenlet, the awaiting coroutine's frames hang off the parent greenlet. This
    runs for every savepoint, so it stops at the first frame that is not a library's.
    """

    def __init__(self, *modules: ModuleType | str) -> None:
        self._modules = modules
        self._prefixes: tuple[str, ...] | None = None
        self._skipped: dict[str, bool] = {}

    def _skips(self, filename: str) -> bool:
        skipped = self._skipped.get(filename)
        if skipped is None:
            if self._prefixes is None:
                found = [m if isinstance(m, ModuleType) else sys.modules.get(m) for m in self._modules]
                self._prefixes = (
                    *(os.path.dirname(m.__file__ or "") + os.sep for m in found if m is not None),
                    *_ALWAYS,
                )
            skipped = self._skipped[filename] = filename.startswith(self._prefixes)
        return skipped

    def __call__(self) -> str:
        """The caller's frame, as 'file:line in function'."""
        frame: FrameType | None = sys._getframe(1)
        parent = greenlet.getcurrent().parent
        while frame is not None:
            if not self._skips(frame.f_code.co_filename):
                return f"{shown_as(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
            frame = frame.f_back
            if frame is None and parent is not None and parent.gr_frame is not None:
                frame, parent = parent.gr_frame, None
        return "an unknown place"


caller = Where(sqlalchemy, greenlet, asyncio)
