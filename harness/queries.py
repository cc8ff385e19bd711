"""Count the SQL statements a block of code runs, and fail with the SQL when it runs too many.

Transaction bookkeeping (BEGIN, SAVEPOINT, RELEASE, COMMIT, ROLLBACK) is not counted: it depends
on how the test is isolated, not on the code under test.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from harness.db import rollback_scope

__all__ = [
    "CapturedQuery",
    "QueryLog",
    "assert_max_queries",
    "assert_no_n_plus_one",
    "assert_num_queries",
    "capture_queries",
]

_BOOKKEEPING = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END)\b", re.IGNORECASE)
_MAX_PARAMS_SHOWN = 200

Bind = AsyncEngine | AsyncConnection | AsyncSession


@dataclass(frozen=True)
class CapturedQuery:
    """One statement sent to the database: its SQL, parameters, and whether it was an executemany."""

    sql: str
    parameters: Any
    executemany: bool

    def __str__(self) -> str:
        params = repr(self.parameters)
        if len(params) > _MAX_PARAMS_SHOWN:
            params = params[:_MAX_PARAMS_SHOWN] + "…"
        many = " (executemany)" if self.executemany else ""
        return f"{' '.join(self.sql.split())}\n   parameters{many}: {params}"


@dataclass
class QueryLog:
    """The statements captured by `capture_queries`, bookkeeping excluded."""

    queries: list[CapturedQuery] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many statements ran."""
        return len(self.queries)

    @property
    def statements(self) -> list[str]:
        """The SQL of each statement, in order."""
        return [q.sql for q in self.queries]

    def __len__(self) -> int:
        return len(self.queries)

    def __str__(self) -> str:
        return "\n".join(f"{n}. {q}" for n, q in enumerate(self.queries, 1)) or "(no statements)"


def _engine_of(bind: Bind) -> Engine:
    if isinstance(bind, AsyncSession):
        if bind.bind is None:
            msg = "capture_queries() needs a session bound to an engine or connection."
            raise TypeError(msg)
        bind = bind.bind
    if isinstance(bind, AsyncConnection | AsyncEngine):
        return bind.sync_engine
    msg = (  # type: ignore[unreachable]  # untyped callers
        f"capture_queries() takes an AsyncEngine, AsyncConnection or AsyncSession, got {type(bind).__name__}."
    )
    raise TypeError(msg)


@contextlib.contextmanager
def capture_queries(bind: Bind) -> Iterator[QueryLog]:
    """Record every statement run through ``bind``'s engine inside the block.

    Usage::

        with capture_queries(session) as log:
            await service.list_campaigns()
        assert log.count == 1, str(log)
    """
    engine, log = _engine_of(bind), QueryLog()

    def _record(
        _conn: Connection, _cursor: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool
    ) -> None:
        if not _BOOKKEEPING.match(statement):
            log.queries.append(CapturedQuery(statement, parameters, executemany))

    event.listen(engine, "before_cursor_execute", _record)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", _record)


@contextlib.contextmanager
def assert_num_queries(bind: Bind, expected: int) -> Iterator[QueryLog]:
    """Fail unless the block runs exactly ``expected`` statements; the message lists them."""
    __tracebackhide__ = True
    with capture_queries(bind) as log:
        yield log
    if log.count != expected:
        msg = f"Expected {expected} queries but the block ran {log.count}:\n{log}"
        raise AssertionError(msg)


@contextlib.contextmanager
def assert_max_queries(bind: Bind, maximum: int) -> Iterator[QueryLog]:
    """Fail if the block runs more than ``maximum`` statements; the message lists them."""
    __tracebackhide__ = True
    with capture_queries(bind) as log:
        yield log
    if log.count > maximum:
        msg = f"Expected at most {maximum} queries but the block ran {log.count}:\n{log}"
        raise AssertionError(msg)


async def assert_no_n_plus_one(
    session: AsyncSession,
    setup: Callable[[AsyncSession, int], Awaitable[Any]],
    run: Callable[[AsyncSession], Awaitable[Any]],
    *,
    sizes: tuple[int, int] = (2, 8),
) -> tuple[QueryLog, QueryLog]:
    """Fail when the number of queries ``run`` makes grows with the amount of data.

    For each size, in a nested rollback scope of ``session`` (so each starts from the same data
    and a fresh identity map), ``setup(session, size)`` makes the data and ``run(session)`` is
    counted. Equal counts pass; a count that grows with the size is an N+1 pattern and fails
    with both query lists. Returns the two logs.

    Usage::

        async def add_campaigns(session, n):
            session.add_all(Campaign(name=f"c{i}", contacts=[Contact()]) for i in range(n))
            await session.flush()

        await assert_no_n_plus_one(db_session, add_campaigns, lambda s: list_campaigns(s))
    """
    __tracebackhide__ = True
    small, large = sizes
    if not 0 < small < large:
        msg = f"sizes must be two increasing positive sizes such as (2, 8), got {sizes!r}."
        raise ValueError(msg)
    logs = []
    for size in sizes:
        async with rollback_scope(session) as inner:
            await setup(inner, size)
            await inner.flush()
            inner.expunge_all()
            with capture_queries(inner) as log:
                await run(inner)
            logs.append(log)
    if logs[1].count > logs[0].count:
        msg = (
            f"N+1 queries: the block ran {logs[0].count} queries for {small} rows and {logs[1].count} for {large}; "
            "the count should not grow with the data. Load the relationship eagerly (selectinload/joinedload).\n"
            f"With {small}:\n{logs[0]}\nWith {large}:\n{logs[1]}"
        )
        raise AssertionError(msg)
    return logs[0], logs[1]
