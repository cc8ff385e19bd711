"""Commit scopes: real commits on separate connections, then the rows they added deleted."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from harness.db.engines import LAZY_BEGIN, prepare, state_of
from harness.db.scopes import Scope, check_scope_engine, current_session_var, engine_and_settings
from harness.db.urls import is_memory
from harness.exceptions import IsolationError, ScopeError

__all__ = ["CommitScope", "commit_scope"]

PROBE_TABLE = "harness_isolation_probe"  # probe_isolation's scratch table: never a user's


@dataclass(frozen=True)
class _Rows:
    """A table's rows as a scope saw them: a fingerprint of their keys, and the keys if it had rows."""

    fingerprint: tuple[Any, ...]  # (count, sum of the keys' hashes): changes when rows come or go
    keys: frozenset[tuple[Any, ...]] | None


@dataclass(frozen=True)
class _Tables:
    """The tables a commit scope watches, and the SQL that fingerprints them: built once per set of names."""

    names: frozenset[tuple[str | None, str]]  # (schema, table); SQLite's sqlite_sequence included
    sorted: list[sqlalchemy.Table]  # parents first
    fingerprint_sql: list[str]  # each for up to 400 tables; its rows name them by their place in sorted


@dataclass(frozen=True)
class _Snapshot:
    """What a commit scope puts back: each table's rows and each sequence's position."""

    tables: _Tables
    rows: dict[str, _Rows]
    sequences: dict[str, Any]


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
    _before: _Snapshot | None = None
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
        async with self.engine.connect() as connection:
            if self.engine.dialect.name == "postgresql":  # reads only: spare the BEGIN and ROLLBACK trips
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            self._before = await connection.run_sync(_snapshot, _snapshots.get(self.engine.sync_engine))
        _snapshots[self.engine.sync_engine] = self._before
        state.commit_scopes += 1
        self.active = True
        self.session = self.new_session()
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
            assert self._before is not None
            # One transaction from the first read: the fingerprints and the deletes see the same rows.
            async with self.engine.execution_options(**{LAZY_BEGIN: False}).begin() as connection:
                lost = await connection.run_sync(_restore, self._before)
            _snapshots[self.engine.sync_engine] = self._before  # what the database holds again
        finally:
            state = state_of(self.engine)
            state.commit_scopes -= 1
            if state.commit_scopes == 0 and _pool_bound_to_this_loop(self.engine):
                # Sessions waiting for a pooled connection (more than the pool holds, at once) bind
                # the pool's asyncio queue to this event loop, which fails the next test's waiters
                # (per-test loops); a new pool starts unbound. Only then: reconnecting costs.
                await self.engine.dispose()
        if lost and exc is None:
            msg = (
                f"Rows that existed before the commit scope were deleted for real: {', '.join(lost)}. harness "
                "removes the rows a real-commit test adds but cannot bring back rows it deleted, so later tests "
                "would see a different database. Delete only rows the test created, or use a rollback scope."
            )
            raise IsolationError(msg)


# -- Snapshots: read in one connection's few round trips, reused while a table's fingerprint holds ------


def _snapshot(connection: Connection, previous: _Snapshot | None) -> _Snapshot:
    """The database's rows and sequences now; the keys of tables unchanged since ``previous`` are reused."""
    names = _table_names(connection)
    if previous is not None and previous.tables.names == names:
        tables, known = previous.tables, previous.rows
    else:
        tables, known = _watch(connection, names), {}
    rows = {}
    for table, fingerprint in _fingerprints(connection, tables).items():
        seen = known.get(table.fullname)
        if seen is not None and seen.fingerprint == fingerprint:
            rows[table.fullname] = seen
        else:
            rows[table.fullname] = _Rows(fingerprint, _keys(connection, table) if fingerprint[0] else None)
    return _Snapshot(tables, rows, _sequences(connection, names))


def _restore(connection: Connection, before: _Snapshot) -> list[str]:
    """Delete the rows added since ``before`` (children first) and put sequences back; name tables that lost rows."""
    lost = []
    fingerprints = _fingerprints(connection, before.tables)
    for table in reversed(before.tables.sorted):  # parents first: delete children first
        was = before.rows[table.fullname]
        if fingerprints[table] == was.fingerprint:
            continue  # untouched: the usual case, and why clean-up costs what the test wrote
        if was.keys is None:
            connection.execute(table.delete())
            continue
        now = _keys(connection, table)
        added = list(now - was.keys)
        key = sqlalchemy.tuple_(*table.primary_key.columns)
        for start in range(0, len(added), _DELETE_CHUNK):  # bounded: drivers cap parameters
            connection.execute(table.delete().where(key.in_(added[start : start + _DELETE_CHUNK])))
        if missing := len(was.keys - now):
            lost.append(f"{missing} of {table.fullname}")
    _set_sequences(connection, before)
    return lost


def _table_names(connection: Connection) -> frozenset[tuple[str | None, str]]:
    """(schema, table) of every table: the default schema's (None) and, on PostgreSQL, the others'."""
    if connection.dialect.name == "postgresql":
        rows = connection.execute(_POSTGRES_TABLES).all()
        names = {(None if default else schema, name) for schema, name, default in rows}
    else:
        names = {(None, name) for name in connection.exec_driver_sql(_SQLITE_TABLES).scalars()}
    return frozenset(names - {(None, PROBE_TABLE)})


_POSTGRES_TABLES = sqlalchemy.text(  # text(): escapes the % for psycopg's paramstyle
    "SELECT n.nspname, c.relname, n.nspname = current_schema() FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'"
)
_SQLITE_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"
_SQLITE_SEQUENCES = (None, "sqlite_sequence")


def _watch(connection: Connection, names: frozenset[tuple[str | None, str]]) -> _Tables:
    """The named tables reflected, parents before children, and the SQL that fingerprints them."""
    metadata = sqlalchemy.MetaData()
    for schema in {schema for schema, _ in names}:
        only = [name for s, name in names if s == schema and not name.startswith("sqlite_")]
        metadata.reflect(connection, schema=schema, only=only)
    with warnings.catch_warnings():  # a foreign-key cycle only changes the deletion order
        warnings.simplefilter("ignore", SAWarning)
        tables = list(metadata.sorted_tables)
    key_hash = _key_hash_expression(connection.dialect.name)
    fingerprint_sql = []
    for start in range(0, len(tables), 400):  # SQLite allows 500 terms in a compound SELECT
        query = sqlalchemy.union_all(
            *(
                sqlalchemy.select(
                    sqlalchemy.literal(n),
                    sqlalchemy.func.count(),
                    key_hash(table.primary_key.columns) if table.primary_key.columns else _ZERO,
                ).select_from(table)
                for n, table in enumerate(tables[start : start + 400], start)
            )
        )
        # Compiled once, here: building and compiling a 20-table union costs more than running it.
        compiled = query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        fingerprint_sql.append(str(compiled))
    return _Tables(names, tables, fingerprint_sql)


def _fingerprints(connection: Connection, tables: _Tables) -> dict[sqlalchemy.Table, tuple[Any, ...]]:
    """Each table's row count and the sum of its keys' hashes, in one query per 400 tables."""
    if connection.dialect.name == "sqlite":
        _lend_key_hash(connection)
    fingerprints = {}
    for sql in tables.fingerprint_sql:
        for n, count, hashes in connection.exec_driver_sql(sql):
            fingerprints[tables.sorted[n]] = (count, hashes)
    return fingerprints


_ZERO: sqlalchemy.ColumnElement[Any] = sqlalchemy.literal_column("0")


def _key_hash_expression(dialect: str) -> Callable[[Any], sqlalchemy.ColumnElement[Any]]:
    """A SQL expression summing a hash of each row's key: the same sum for the same set of keys."""
    if dialect == "postgresql":
        return lambda columns: sqlalchemy.func.coalesce(
            sqlalchemy.func.sum(
                sqlalchemy.func.hashtextextended(
                    sqlalchemy.cast(sqlalchemy.tuple_(*columns), sqlalchemy.Text), 0
                )
            ),
            0,
        )
    # total() adds floats: the same keys met in another order may round differently, which only
    # makes harness read the keys again.
    return lambda columns: sqlalchemy.func.total(getattr(sqlalchemy.func, _KEY_HASH)(*columns))


def _lend_key_hash(connection: Connection) -> None:
    """SQLite has no hash function: lend the connection one, once."""
    info = connection.connection.info
    if not info.get(_KEY_HASH):
        connection.connection.dbapi_connection.create_function(  # type: ignore[union-attr]
            _KEY_HASH, -1, _hash_key, deterministic=True
        )
        info[_KEY_HASH] = True


_KEY_HASH = "harness_key_hash"


def _hash_key(*values: Any) -> int:
    digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 12  # 52 bits: exact as a float


def _keys(connection: Connection, table: sqlalchemy.Table) -> frozenset[tuple[Any, ...]]:
    if not table.primary_key.columns:
        msg = (
            f"Table {table.fullname!r} has rows but no primary key, so harness cannot tell the rows a "
            "real-commit test adds from the ones it must keep. Give the table a primary key."
        )
        raise ScopeError(msg)
    return frozenset(tuple(row) for row in connection.execute(sqlalchemy.select(*table.primary_key.columns)))


def _sequences(connection: Connection, names: frozenset[tuple[str | None, str]]) -> dict[str, Any]:
    """Where each sequence stands: PostgreSQL's sequences, SQLite's AUTOINCREMENT counters."""
    if connection.dialect.name == "postgresql":
        return dict(connection.execute(_POSTGRES_SEQUENCES).all())
    if _SQLITE_SEQUENCES not in names:  # no AUTOINCREMENT table
        return {}
    return dict(connection.exec_driver_sql("SELECT name, seq FROM sqlite_sequence").all())


_POSTGRES_SEQUENCES = sqlalchemy.text(
    "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences"
)


def _set_sequences(connection: Connection, before: _Snapshot) -> None:
    """Put back the sequences that moved; a sequence never used before starts again."""
    now = _sequences(connection, before.tables.names)
    was = before.sequences
    moved = [name for name, value in now.items() if value != was.get(name)]
    if not moved:
        return
    if connection.dialect.name == "postgresql":  # all in one statement: one round trip
        values = [was.get(name) for name in moved]
        connection.execute(_POSTGRES_SETVAL, {"names": moved, "values": values})
        return
    for name in moved:
        statement = (
            "UPDATE sqlite_sequence SET seq = :value WHERE name = :name"
            if was.get(name) is not None
            else "DELETE FROM sqlite_sequence WHERE name = :name"
        )
        connection.execute(sqlalchemy.text(statement), {"name": name, "value": was.get(name)})


_POSTGRES_SETVAL = sqlalchemy.text(
    # A sequence never drawn from starts again at its start value, with nothing drawn.
    "SELECT setval(s.seqrelid, coalesce(v.value, s.seqstart), v.value IS NOT NULL) FROM pg_sequence s "
    "JOIN unnest(CAST(:names AS text[]), CAST(:values AS bigint[])) AS v(name, value) "
    "ON s.seqrelid = CAST(v.name AS regclass)"
)


_snapshots: WeakKeyDictionary[Engine, _Snapshot] = WeakKeyDictionary()  # the last one taken, per engine
_DELETE_CHUNK = 500


def _pool_bound_to_this_loop(engine: AsyncEngine) -> bool:
    """A SQLite file engine whose idle pool sessions waited on (see CommitScope.__aexit__)."""
    if engine.dialect.name != "sqlite" or is_memory(engine.url):
        return False
    checked_out = getattr(engine.pool, "checkedout", None)
    if checked_out is None or checked_out():
        return False  # connections in use: disposing would orphan them
    waiting_room = getattr(engine.pool, "_pool", None)  # SQLAlchemy's AsyncAdaptedQueue
    if waiting_room is None:
        return True  # SQLAlchemy's internals changed: take the safe path
    queue = vars(waiting_room).get("_queue")  # made lazily, on the first check-in
    return queue is not None and getattr(queue, "_loop", True) is not None  # bound by a waiter


def commit_scope(
    engine: AsyncEngine | async_sessionmaker[Any],
    *,
    sessionmaker: async_sessionmaker[Any] | None = None,
    **session_options: Any,
) -> CommitScope:
    """Open a scope whose sessions commit for real; on exit, delete the rows they added.

    For code that needs several connections at once (background workers, ``asyncio.gather`` over
    separate sessions), which a rollback scope's single connection cannot serve. The scope records
    each table's rows on entry; on exit it deletes the rows added since, only in the tables that
    changed, children first. Rows that existed before stay (changes to them are not undone), and
    deleting one of them is an `IsolationError`, since it cannot be brought back. The engine must
    be a test engine, as for `rollback_scope`; ``sessionmaker=`` and ``session_options`` work as
    there.

    Usage:

        async with commit_scope(engine) as session:
            await asyncio.gather(worker.run(), worker.run())  # each opens its own session
            assert await session.scalar(select(func.count()).select_from(Job)) == 2
    """
    target, options = engine_and_settings(engine, sessionmaker, session_options, "commit_scope")
    return CommitScope(target, options)
