"""Where the code under test called into SQLAlchemy: the first frame that is not a library's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from types import FrameType

import greenlet
import sqlalchemy

# Where library frames live: the packages of SQLAlchemy, greenlet, asyncio and harness, and contextlib.
_SKIPPED_FILES = (
    *(os.path.dirname(module.__file__ or "") + os.sep for module in (sqlalchemy, greenlet, asyncio)),
    os.path.dirname(os.path.dirname(__file__)) + os.sep,
    contextlib.__file__,
    "<",  # generated code: SQLAlchemy's decorators, <frozen …>
)
_skipped_filenames: dict[str, bool] = {}


def caller() -> str:
    """The innermost frame of the code that called into SQLAlchemy, as 'file:line in function'.

    Inside SQLAlchemy's greenlet, the awaiting coroutine's frames hang off the parent greenlet. This
    runs for every savepoint, so it stops at the first frame that is not a library's.
    """
    frame: FrameType | None = sys._getframe(1)
    parent = greenlet.getcurrent().parent
    while frame is not None:
        code = frame.f_code
        skipped = _skipped_filenames.get(code.co_filename)
        if skipped is None:
            skipped = _skipped_filenames[code.co_filename] = code.co_filename.startswith(_SKIPPED_FILES)
        if not skipped:
            return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back
        if frame is None and parent is not None and parent.gr_frame is not None:
            frame, parent = parent.gr_frame, None
    return "an unknown place"
