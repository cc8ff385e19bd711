"""Commit scopes: real commits on separate connections, then the rows they added deleted."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from harness.db.engines import LAZY_BEGIN, prepare, state_of
from harness.db.scopes import Scope, check_scope_engine, current_session_var
from harness.db.urls import is_memory
from harness.exceptions import IsolationError, ScopeError

__all__ = ["CommitScope", "commit_scope"]

PROBE_TABLE = "harness_isolation_probe"  # probe_isolation's scratch table: never a user's


@dataclass
class _TableState:
    count: int
    keys: set[tuple[Any, ...]] | None  # primary keys, read only for tables that had rows


@dataclass(eq=False)
class CommitScope(Scope):
    """An async context manager for code that needs real commits; made by `commit_scope`.

    ``session`` is the scope's session while it is active; ``engine`` is where it commits.
    """

    engine: AsyncEngine
    session_options: dict[str, Any] = field(default_factory=dict)
    session: AsyncSession | None = None
    active: bool = False
    _entered: bool = False
    _tables: list[sqlalchemy.Table] = field(default_factory=list)
    _before: dict[str, _TableState] = field(default_factory=dict)
    _outer_session: AsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        if self._entered:
            msg = "This commit scope was already used. Call commit_scope() again for a new scope."
            raise ScopeError(msg)
        self._entered = True
        if not isinstance(self.engine, AsyncEngine):  # untyped callers
            msg = f"commit_scope() takes an AsyncEngine, got {type(self.engine).__name__}."  # type: ignore[unreachable]
            raise TypeError(msg)
        check_scope_engine(self.engine, trusted=False)
        state = prepare(self.engine.sync_engine)
        if state.scopes:
            msg = (
                "commit_scope() was opened inside a rollback scope of the same engine: its connections would "
                "join the rollback scope's transaction instead of committing. Open it outside any rollback "
                "scope (RealCommitsTest instead of IntegrationTest, or a test without db_session)."
            )
            raise ScopeError(msg)
        self._tables = await _user_tables(self.engine)
        self._before = await _table_states(self.engine, self._tables, {})
        state.commit_scopes += 1
        self.active = True
        self.session = self.new_session(bind=self.engine.execution_options(**{LAZY_BEGIN: True}))
        self._outer_session = current_session_var.get()
        current_session_var.set(self.session)
        return self.session

    def new_session(self, **options: Any) -> AsyncSession:
        """A new `AsyncSession` on the scope's engine; its commits are real."""
        if not self.active:
            msg = "The commit scope has ended. Open a new scope with commit_scope()."
            raise ScopeError(msg)
        return self._make_session(
            **{"bind": self.engine, "expire_on_commit": False, **self.session_options, **options}
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.session is not None:
                await self.session.close()
        finally:
            self.active = False
            if current_session_var.get() is self.session:
                current_session_var.set(self._outer_session)
        try:
            lost = await self._delete_new_rows()
        finally:
            state = state_of(self.engine)
            state.commit_scopes -= 1
            if _pool_is_idle_file_pool(self.engine) and state.commit_scopes == 0:
                # Sessions waiting for a pooled connection (more than the pool holds, at once) bind
                # the pool's queue to this event loop, which fails the next test's waiters
                # (per-test loops); a new pool starts unbound. Connecting to a file is cheap.
                await self.engine.dispose()
        if lost and exc is None:
            msg = (
                f"Rows that existed before the commit scope were deleted for real: {', '.join(lost)}. harness "
                "removes the rows a real-commit test adds but cannot bring back rows it deleted, so later tests "
                "would see a different database. Delete only rows the test created, or use a rollback scope."
            )
            raise IsolationError(msg)

    async def _delete_new_rows(self) -> list[str]:
        """Delete the rows added since the scope began, children first; name tables that lost rows."""
        after = await _table_states(self.engine, self._tables, self._before)
        lost = []
        async with self.engine.begin() as connection:
            for table in reversed(self._tables):  # sorted parents first: delete children first
                before, now = self._before[table.fullname], after[table.fullname]
                if before.keys is None:
                    if now.count:
                        await connection.execute(table.delete())
                    continue
                assert now.keys is not None
                added = list(now.keys - before.keys)
                key = sqlalchemy.tuple_(*table.primary_key.columns)
                for start in range(0, len(added), _DELETE_CHUNK):  # bounded: drivers cap parameters
                    await connection.execute(
                        table.delete().where(key.in_(added[start : start + _DELETE_CHUNK]))
                    )
                if missing := len(before.keys - now.keys):
                    lost.append(f"{missing} of {table.fullname}")
        return lost


async def _user_tables(engine: AsyncEngine) -> list[sqlalchemy.Table]:
    """The database's tables, parents before children; reflected again only when their names change."""
    async with engine.connect() as connection:
        names = await connection.run_sync(_table_names)
        tables = _reflected_tables.get(engine.sync_engine)
        if tables is None or {(t.schema, t.name) for t in tables} != names:
            metadata = sqlalchemy.MetaData()

            def reflect(sync: Connection) -> None:
                for schema in {schema for schema, _ in names}:
                    only = [name for s, name in names if s == schema]
                    metadata.reflect(sync, schema=schema, only=only)

            await connection.run_sync(reflect)
            with warnings.catch_warnings():  # a foreign-key cycle only changes the deletion order
                warnings.simplefilter("ignore", SAWarning)
                tables = list(metadata.sorted_tables)
            _reflected_tables[engine.sync_engine] = tables
    return tables


def _table_names(connection: Connection) -> set[tuple[str | None, str]]:
    """(schema, table) of every table: the default schema's (None) and, on PostgreSQL, the others'."""
    inspector = sqlalchemy.inspect(connection)
    schemas: list[str | None] = [None]
    if connection.dialect.name == "postgresql":
        default = inspector.default_schema_name
        schemas += [
            s
            for s in inspector.get_schema_names()
            if s != default and s != "information_schema" and not s.startswith("pg_")
        ]
    return {(schema, name) for schema in schemas for name in inspector.get_table_names(schema=schema)} - {
        (None, PROBE_TABLE)
    }


async def _table_states(
    engine: AsyncEngine, tables: list[sqlalchemy.Table], before: dict[str, _TableState]
) -> dict[str, _TableState]:
    """Row counts of every table in a few round trips, and the primary keys of tables that had rows."""
    states: dict[str, _TableState] = {}
    async with engine.connect() as connection:
        for start in range(0, len(tables), 400):  # SQLite allows 500 terms in a compound SELECT
            chunk = tables[start : start + 400]
            counts = sqlalchemy.union_all(
                *(
                    sqlalchemy.select(sqlalchemy.literal(t.fullname), sqlalchemy.func.count()).select_from(t)
                    for t in chunk
                )
            )
            for name, count in (await connection.execute(counts)).all():
                states[name] = _TableState(count, None)
        for table in tables:
            state = states[table.fullname]
            had_rows = before[table.fullname].keys is not None if before else state.count > 0
            if not had_rows:
                continue
            if not table.primary_key.columns:
                msg = (
                    f"Table {table.fullname!r} has rows but no primary key, so harness cannot tell the rows a "
                    "real-commit test adds from the ones it must keep. Give the table a primary key."
                )
                raise ScopeError(msg)
            rows = await connection.execute(sqlalchemy.select(*table.primary_key.columns))
            state.keys = {tuple(row) for row in rows}
    return states


_reflected_tables: WeakKeyDictionary[Engine, list[sqlalchemy.Table]] = WeakKeyDictionary()
_DELETE_CHUNK = 500


def _pool_is_idle_file_pool(engine: AsyncEngine) -> bool:
    """A SQLite file engine none of whose connections is in use: disposing of its pool loses nothing."""
    checked_out = getattr(engine.pool, "checkedout", None)
    return (
        engine.dialect.name == "sqlite"
        and not is_memory(engine.url)
        and checked_out is not None
        and checked_out() == 0
    )


def commit_scope(engine: AsyncEngine, **session_options: Any) -> CommitScope:
    """Open a scope whose sessions commit for real; on exit, delete the rows they added.

    For code that needs several connections at once (background workers, ``asyncio.gather`` over
    separate sessions), which a rollback scope's single connection cannot serve. The scope records
    each table's rows on entry; on exit it deletes the rows added since, only in the tables that
    changed, children first. Rows that existed before stay (changes to them are not undone), and
    deleting one of them is an `IsolationError`, since it cannot be brought back. The engine must
    be a test engine, as for `rollback_scope`.

    Usage:

        async with commit_scope(engine) as session:
            await asyncio.gather(worker.run(), worker.run())  # each opens its own session
            assert await session.scalar(select(func.count()).select_from(Job)) == 2
    """
    return CommitScope(engine, dict(session_options))
