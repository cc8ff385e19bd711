"""Notes on SQLAlchemy's errors that a test runs into: what happened, in the test's terms, and the fix.

The pytest plugin adds them to the error a test fails with; `explain` does it for any exception.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.exc import MissingGreenlet, StatementError, UnboundExecutionError

__all__ = ["explain"]

UNBOUND_NOTE = """\
harness: a session of the app has no engine to run on. If the app binds its sessionmaker at start-up \
(in its lifespan), keep the lifespan on (app_client runs it unless harness_app_lifespan = off). Otherwise point \
the app at the test database: adopt its engine (harness_engines = app.db:engine in the pytest configuration) or \
list its async_sessionmaker in the harness_app_bind fixture."""

LAZY_LOAD_NOTE = """\
harness: {attribute} was loaded lazily, which needs I/O that an attribute access cannot await under \
SQLAlchemy asyncio. Load it with the query (select(...).options(selectinload({attribute}))), refresh it \
first (await session.refresh(obj, ["{key}"])), or await it (await obj.awaitable_attrs.{key}). An object \
whose attributes were expired by a commit reloads them the same way: expire_on_commit=False keeps them \
(the default of harness's sessions)."""


def explain(error: BaseException) -> None:
    """Add harness's note to ``error`` when it is one harness knows how to explain (once)."""
    if getattr(error, "_harness_explained", False):
        return
    note = _note(error)
    if note is not None:
        error.add_note(note)
        error._harness_explained = True  # type: ignore[attr-defined]


def _note(error: BaseException) -> str | None:
    if isinstance(error, UnboundExecutionError):
        return UNBOUND_NOTE
    cause = error.orig if isinstance(error, StatementError) else error
    if isinstance(cause, MissingGreenlet):
        attribute = _lazy_attribute(error.__traceback__)
        if attribute is not None:
            owner, key = attribute
            return LAZY_LOAD_NOTE.format(attribute=f"{owner}.{key}", key=key)
    return None


def _lazy_attribute(tb: TracebackType | None) -> tuple[str, str] | None:
    """The (class, attribute) whose loading raised: the ORM's attribute ``get`` frame on the way."""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "get" and frame.f_code.co_filename.endswith("attributes.py"):
            key, state = frame.f_locals.get("key"), frame.f_locals.get("state")
            owner = getattr(getattr(state, "class_", None), "__name__", None)
            if isinstance(key, str) and owner:
                return owner, key
        tb = tb.tb_next
    return None
