"""Count the SQL statements a block of code runs, and fail with the SQL when it runs too many.

Transaction bookkeeping (BEGIN, SAVEPOINT, RELEASE, COMMIT, ROLLBACK) is not counted: it depends
on how the test is isolated, not on the code under test.
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
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

_REPEATS_HINTED = 3  # one statement run this often in a failing budget: say "N+1"
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

    def grouped(self) -> str:
        """The statements in order; a run of the same SQL is one line with its count and first parameters."""
        lines, start = [], 0
        while start < len(self.queries):
            end = start + 1
            while end < len(self.queries) and self.queries[end].sql == self.queries[start].sql:
                end += 1
            numbers = f"{start + 1}" if end - start == 1 else f"{start + 1}-{end} ({end - start} times)"
            lines.append(f"{numbers}. {self.queries[start]}")
            start = end
        return "\n".join(lines) or "(no statements)"

    def repeated(self) -> tuple[str, int] | None:
        """The SELECT that ran most often with different parameters, and how often, if three times or more.

        The shape of an N+1 query: one lookup per row of an earlier result.
        """
        runs: dict[str, list[str]] = collections.defaultdict(list)
        for query in self.queries:
            if query.sql.lstrip()[:6].upper() == "SELECT":
                runs[query.sql].append(repr(query.parameters))
        shaped = [(sql, len(params)) for sql, params in runs.items() if len(set(params)) > 1]
        sql, times = max(shaped, key=lambda pair: pair[1], default=("", 0))
        return (sql, times) if times >= _REPEATS_HINTED else None


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

    Usage:

    ```python
    with capture_queries(session) as log:
        await service.list_campaigns()
    assert log.count == 1, str(log)
    ```
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


class _QueryBudget:
    """A block's statement count checked when it ends; a class, not a generator, so that a failure
    points at the test's `with` line rather than at contextlib."""

    def __init__(self, bind: Bind, limit: int, *, exact: bool) -> None:
        self._capture = capture_queries(bind)
        self.limit, self.exact = limit, exact

    def __enter__(self) -> QueryLog:
        self.log = self._capture.__enter__()
        return self.log

    def __exit__(self, *exc_info: object) -> None:
        __tracebackhide__ = True
        self._capture.__exit__(None, None, None)
        count = self.log.count
        if exc_info[0] is not None or (count == self.limit if self.exact else count <= self.limit):
            return
        expected = f"{self.limit}" if self.exact else f"at most {self.limit}"
        msg = f"Expected {expected} queries but the block ran {count}:\n{self.log.grouped()}"
        if (repeated := self.log.repeated()) is not None:
            msg += (
                f"\n\nOne statement ran {repeated[1]} times with different parameters: the shape of an N+1 query "
                "(a lazy relationship loaded once per row). Load it in the first query with "
                "selectinload()/joinedload(), or check with assert_no_n_plus_one()."
            )
        raise AssertionError(msg)


def assert_num_queries(bind: Bind, expected: int) -> AbstractContextManager[QueryLog]:
    """Fail unless the block runs exactly ``expected`` statements; the message lists them.

    Usage:

    ```python
    with assert_num_queries(session, 2):
        await service.list_campaigns()
    ```
    """
    return _QueryBudget(bind, expected, exact=True)


def assert_max_queries(bind: Bind, maximum: int) -> AbstractContextManager[QueryLog]:
    """Fail if the block runs more than ``maximum`` statements; the message lists them.

    Usage:

    ```python
    with assert_max_queries(session, 2):
        await service.list_campaigns()
    ```
    """
    return _QueryBudget(bind, maximum, exact=False)


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

    Usage:

    ```python
    async def add_campaigns(session, n):
        session.add_all(Campaign(name=f"c{i}", contacts=[Contact()]) for i in range(n))
        await session.flush()

    await assert_no_n_plus_one(db_session, add_campaigns, lambda s: list_campaigns(s))
    ```
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
