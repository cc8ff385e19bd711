"""Test engines: `create_test_engine`, the driver fixes it applies, and the guards on its dialect.

Every engine harness makes gets, on its dialect (shared with the engines that
``execution_options()`` derives, and with the app's engines harness adopts):

- a pool that, while a rollback scope is active, hands out `JoinedConnection`s on the scope's
  connection instead of connections of their own;
- statement guards that call the active scope for every statement on its connection (savepoint
  tracking, raw COMMIT, overlapping sessions) and stop a commit of its outer transaction;
- on SQLite, SQLAlchemy's documented transaction fix; on PostgreSQL, lock and statement timeouts.

`EngineState` is what the guards and the pool share per engine: the active scopes.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

from harness._where import caller
from harness.db import loops
from harness.db.drivers import postgres_connect_args, server_settings, terminate
from harness.db.joining import DeferredChecks, JoinedConnection, join
from harness.db.urls import DEFAULT_URL, TEST_PREFIX, check_test_database, database_key, refuse_redirects
from harness.exceptions import IsolationError, UnsafeDatabaseError

__all__ = ["EngineState", "create_test_engine", "is_test_engine", "prepare", "state_of", "trust"]

SCOPE_KEY = "harness.scope"  # in a scope's connection.info and its sessions' info
LAZY_BEGIN = "harness_lazy_begin"  # SQLite: False keeps a connection's BEGIN eager in commit scopes
# Whitespace and comments before a statement's first keyword.
LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_CHANGES = r"INSERT|UPDATE|DELETE|MERGE|UPSERT|REPLACE|CREATE|ALTER|DROP|TRUNCATE|COPY|GRANT|REVOKE"
_WRITE = re.compile(rf"({_CHANGES})\b|WITH\b.*\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE | re.DOTALL)


def is_write(statement: str) -> bool:
    """Whether ``statement`` changes the database (a common table expression that writes counts)."""
    return _WRITE.match(LEADING_NOISE.sub("", statement, count=1)) is not None


@dataclass(eq=False)
class EngineState:
    """What a test engine's pool and guards share: the scopes active on it."""

    scopes: list[Any] = field(default_factory=list)  # outermost rollback scopes, innermost last
    own_checkout: bool = False  # harness opening or closing a scope's connection: not to be joined
    commit_scopes: int = 0  # real commits from several connections: SQLite writers must queue
    deferred: DeferredChecks | None = None  # read once, at the first commit code makes in a scope


_states: WeakKeyDictionary[Dialect, EngineState] = WeakKeyDictionary()
_test_dialects: WeakKeyDictionary[Dialect, tuple[Any, ...]] = (
    WeakKeyDictionary()
)  # create_test_engine's: database keys
_trusted: weakref.WeakSet[Dialect] = weakref.WeakSet()  # harness's other engines: admin connections


def state_of(engine: Engine | AsyncEngine | Connection) -> EngineState:
    """The state of a prepared engine (kept per dialect, so derived and adopted engines share it)."""
    return _states[engine.dialect]


def prepare(engine: Engine) -> EngineState:
    """Give ``engine`` the joining pool, the guards on its dialect and connections tied to their
    event loop (`harness.db.loops`), once; return its state.

    `create_test_engine` does this; a scope does it for an engine it is handed that harness did
    not make (a PostgreSQL engine on a test database).
    """
    state = _states.get(engine.dialect)
    if state is None:
        state = _states[engine.dialect] = EngineState()
        _guard_dialect(engine.dialect)
        loops.tie_to_loops(engine)
    if not isinstance(engine.pool, _JoiningPool):
        engine.pool.__class__ = _joining(type(engine.pool))
    return state


def is_test_engine(engine: Engine | AsyncEngine) -> bool:
    """Whether ``engine`` was made by `create_test_engine` (or derives from one)."""
    return engine.dialect in _test_dialects


def test_database_urls() -> set[tuple[Any, ...]]:
    """The databases of the live test engines, as `database_key` tuples."""
    return set(_test_dialects.values())


def trust(engine: Engine | AsyncEngine) -> None:
    """Let ``engine`` through harness's database guard: harness's own engines (admin connections)."""
    _trusted.add(engine.dialect)


def is_trusted(dialect: Dialect) -> bool:
    """Whether connections of ``dialect`` are harness's own: test engines and trusted ones."""
    return dialect in _trusted or dialect in _test_dialects


def create_test_engine(
    url: str | URL | None = None,
    *,
    allow_remote: bool = False,
    lock_timeout: float | None = 5.0,
    statement_timeout: float | None = 60.0,
    **engine_options: Any,
) -> AsyncEngine:
    """Create an `AsyncEngine` for tests, with rollback isolation that holds on every backend.

    The default is in-memory SQLite on aiosqlite. On SQLite, harness applies SQLAlchemy's fix for
    SAVEPOINT and transactional DDL (it emits BEGIN itself) and turns on foreign keys; without the
    fix a test's committed rows survive the rollback. On PostgreSQL (asyncpg) every connection gets
    ``lock_timeout`` and ``statement_timeout`` (seconds; ``None`` turns one off), so a test blocked
    by another connection fails with an explanation instead of hanging.

    While a rollback scope is active on the engine, connections code opens from it join the
    scope's transaction (see `harness.db.joining`).

    The URL must name a test database (see `check_test_database`); other keyword arguments go to
    `sqlalchemy.ext.asyncio.create_async_engine`.

    Usage:

        engine = create_test_engine("postgresql+asyncpg://postgres@127.0.0.1/test_app")
        async with rollback_scope(engine) as session:
            ...
    """
    parsed = check_test_database(url if url is not None else DEFAULT_URL, allow_remote=allow_remote)
    options: dict[str, Any] = dict(engine_options)
    refuse_redirects(options.get("connect_args", {}), "connect_args")
    if "host" in options.get("connect_args", {}):
        check_test_database(parsed.set(host=str(options["connect_args"]["host"])), allow_remote=allow_remote)
    if parsed.get_backend_name() == "postgresql":
        driver = parsed.get_driver_name()
        connect_args = options.pop("connect_args", {})
        settings = {"application_name": "harness", **server_settings(driver, connect_args)}
        for name, seconds in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
            if seconds is not None:
                settings.setdefault(name, f"{int(seconds * 1000)}ms")
        # The client's own timeouts: a server that froze fails the test instead of hanging the run.
        # The command timeout leaves the server time to cancel first, with its clearer error, and
        # is set only over harness's own statement_timeout: one the caller set may be longer.
        command_timeout = None
        if (
            statement_timeout is not None
            and settings["statement_timeout"] == f"{int(statement_timeout * 1000)}ms"
        ):
            command_timeout = statement_timeout + 5
        options["connect_args"] = postgres_connect_args(
            driver, connect_args, connect_timeout=10, settings=settings, command_timeout=command_timeout
        )
    engine = create_async_engine(parsed, **options)
    sync_engine = engine.sync_engine
    prepare(sync_engine)
    _test_dialects[sync_engine.dialect] = database_key(parsed)
    if parsed.get_backend_name() == "sqlite":
        _fix_sqlite_transactions(sync_engine)
    else:
        event.listen(sync_engine, "handle_error", explain_timeouts)
        event.listen(sync_engine, "connect", _check_connected_database)
    return engine


# -- The pool: joined connections while a scope is active --------------------------------------------


class _JoiningPool(Pool):
    def connect(self) -> Any:
        state = _states.get(self._dialect)  # type: ignore[arg-type]
        if state is not None and state.scopes and not state.own_checkout:
            return join(state)
        return super().connect()

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        if loops.opened_in_another_loop(connection):  # closing it would await on a loop not running here
            loops.drop(connection)
            return
        super()._close_connection(connection, terminate=terminate)


_joining_classes: dict[type[Pool], type[Pool]] = {}


def _joining(pool_class: type[Pool]) -> type[Pool]:
    """``pool_class`` with `_JoiningPool`'s connect(); kept by ``Pool.recreate()`` after a dispose."""
    if issubclass(pool_class, _JoiningPool):
        return pool_class
    if pool_class not in _joining_classes:
        _joining_classes[pool_class] = type(f"Joining{pool_class.__name__}", (_JoiningPool, pool_class), {})
    return _joining_classes[pool_class]


# -- Driver fixes ----------------------------------------------------------------------------------


def _check_connected_database(dbapi_connection: Any, _record: Any) -> None:
    # The last word on safety: whatever the URL and options said, the server must say test_.
    cursor = dbapi_connection.cursor()
    cursor.execute("SELECT current_database()")
    name = cursor.fetchone()[0]
    cursor.close()
    dbapi_connection.rollback()  # psycopg began a transaction for the query: a fresh connection has none
    if not name.startswith(TEST_PREFIX):
        dbapi_connection.close()
        msg = f"Refusing to use database {name!r}: the server connected harness to a database whose name does not start with {TEST_PREFIX!r}."
        raise UnsafeDatabaseError(msg)


def _fix_sqlite_transactions(engine: Engine) -> None:
    # SQLAlchemy's documented fix: sqlite3's legacy transaction control skips BEGIN before
    # SAVEPOINT and DDL, so a released savepoint escapes the outer transaction and its rows leak.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("foreign_keys=ON", "journal_mode=MEMORY", "synchronous=OFF"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    rollback = engine.dialect.do_rollback

    def do_rollback(connection: Any) -> None:
        # A scope rolls back, then the pool's reset on return rolls back again: a second trip to
        # aiosqlite's thread for nothing. sqlite3 knows, without the trip, whether one is open.
        if getattr(getattr(connection, "driver_connection", None), "in_transaction", True):
            rollback(connection)

    engine.dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Straight to the driver, once per test: aiosqlite's Connection.execute is one trip to its
        # thread, where a cursor would take three (create, execute, close).
        if isinstance(connection.connection, JoinedConnection):
            return  # its transaction is a savepoint inside the scope's
        if _begins_lazily(connection):
            return  # see _begin_before_writing
        await_(connection.connection.driver_connection.execute("BEGIN"))  # type: ignore[union-attr]

    @event.listens_for(engine, "before_cursor_execute")
    def _begin_before_writing(connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        # While real commits run, transactions begin at their first write, with BEGIN IMMEDIATE:
        # - reads run outside a transaction, so each sees what other connections committed (as READ
        #   COMMITTED does on PostgreSQL) and holds no lock that would stop them;
        # - a transaction that read and then wrote would deadlock with another on SQLite's lock
        #   upgrade (SQLITE_BUSY at once); IMMEDIATE takes the write lock first, so writers queue;
        # - the write lock is held from the first write to the commit only, not while the code
        #   awaits an HTTP call between a read and a write.
        if not _begins_lazily(connection):
            return
        driver = connection.connection.driver_connection
        if not driver.in_transaction and LEADING_NOISE.sub("", statement)[:6].upper() != "SELECT":  # type: ignore[union-attr]
            await_(driver.execute("BEGIN IMMEDIATE"))  # type: ignore[union-attr]


def _begins_lazily(connection: Connection) -> bool:
    """Whether the connection's transactions begin at their first write: in commit scopes, unless
    harness asked otherwise (LAZY_BEGIN=False: its clean-up reads and writes in one transaction)."""
    if isinstance(connection.connection, JoinedConnection):
        return False
    state = _states.get(connection.dialect)
    real_commits = state is not None and state.commit_scopes > 0
    return bool(connection.get_execution_options().get(LAZY_BEGIN, real_commits))


TIMEOUT_NOTES = {
    "55P03": (
        "harness: the statement waited longer than lock_timeout for a row or table lock held by another "
        "connection. Inside a test this is usually a connection that is not part of the test's transaction "
        "(an engine harness did not adopt, or a test marked allow_database) waiting on a lock the test holds: "
        "adopt the engine (harness.adopt_engines, or harness_engines in the pytest configuration), or raise the "
        "limit with create_test_engine(lock_timeout=...)."
    ),
    "57014": (
        "harness: the statement ran longer than statement_timeout and PostgreSQL cancelled it. Raise the "
        "limit with create_test_engine(statement_timeout=...) if the query is meant to be slow."
    ),
}


CLIENT_TIMEOUT_NOTE = (
    "harness: PostgreSQL did not answer within the client's command timeout (statement_timeout + 5 s), so "
    "the server was not running the statement either: it froze, or the network to it broke."
)


def explain_timeouts(context: Any) -> None:
    """A handle_error listener: add harness's note to PostgreSQL's lock and statement timeouts, and to
    the client's own (asyncpg's command_timeout, a bare TimeoutError)."""
    error = context.original_exception
    code = getattr(error, "sqlstate", None)
    if code in TIMEOUT_NOTES and context.sqlalchemy_exception is not None:
        context.sqlalchemy_exception.add_note(TIMEOUT_NOTES[code])
    elif isinstance(error, TimeoutError):
        # asyncpg then asks the server to cancel over a new connection and waits for it before
        # anything else on this one, even a close with a timeout: a frozen server never answers.
        # Aborting the socket and discarding the connection is what keeps the run from hanging.
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False  # this connection only: the server may be fine
        with contextlib.suppress(Exception):  # no connection to abort (the error came from connecting)
            terminate(context.connection.connection.driver_connection)
        if CLIENT_TIMEOUT_NOTE not in getattr(error, "__notes__", ()):
            error.add_note(CLIENT_TIMEOUT_NOTE)


# -- Guards on the dialect -------------------------------------------------------------------------


def active_scope(connection: Any) -> Any:
    """The active rollback scope holding ``connection`` (SQLAlchemy's or the pool's), if any."""
    try:
        scope = connection.info.get(SCOPE_KEY)
    except NotImplementedError:  # the bare DBAPI connection of SQLAlchemy's first-connect queries
        return None
    return scope if scope is not None and scope.active else None


_guarded_dialects: weakref.WeakSet[Dialect] = weakref.WeakSet()


def _guard_dialect(dialect: Dialect) -> None:
    """Stop commits of a scope's outer transaction and raw SQL that would end it; track savepoints.

    These hook the dialect rather than Connection events: a single Connection listener puts every
    connection of the engine on SQLAlchemy's event path, which costs each test a fifth of a round
    trip. Engines made with ``execution_options()`` share their base engine's dialect: hooked once.
    """
    if dialect in _guarded_dialects:
        return
    _guarded_dialects.add(dialect)
    _send_savepoints_as_text(dialect)
    commit = dialect.do_commit

    def do_commit(pool_connection: Any) -> None:
        scope = None if isinstance(pool_connection, JoinedConnection) else active_scope(pool_connection)
        if scope is not None:
            scope._stop_commit(
                IsolationError(
                    f"The test's outer transaction was committed at {caller()} (Connection.commit() on the "
                    "scope's connection, for example through session.connection()). harness stopped the commit; "
                    "call session.commit() instead, which releases a savepoint and keeps the test isolated."
                )
            )
        commit(pool_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]

    # Connection- and engine-level execution options (isolation_level=...) both end up here.
    set_characteristics = dialect._set_connection_characteristics  # type: ignore[attr-defined]

    def _set_connection_characteristics(connection: Connection, characteristics: dict[str, Any]) -> None:
        if isinstance(connection.connection, JoinedConnection) and "isolation_level" in characteristics:
            if str(characteristics["isolation_level"]).upper() == "AUTOCOMMIT":
                msg = (
                    f"Code at {caller()} asked for isolation_level='AUTOCOMMIT' inside the test's transaction: "
                    "each of its statements would commit at once, past the rollback. harness refused it. Test "
                    "such code with real commits (harness.RealCommitsTest, or harness.commit_scope())."
                )
                raise IsolationError(msg)
            # A savepoint cannot change its transaction's isolation level (and setting it on the
            # driver would end the test's transaction): the test's applies.
            characteristics = {k: v for k, v in characteristics.items() if k != "isolation_level"}
        if characteristics:
            set_characteristics(connection, characteristics)

    dialect._set_connection_characteristics = _set_connection_characteristics  # type: ignore[attr-defined]

    # A listener returning True tells SQLAlchemy the statement is done: harness skips one that would fail.
    @event.listens_for(dialect, "do_execute")
    @event.listens_for(dialect, "do_executemany")
    def _execute(_cursor: Any, sent: str, _parameters: Any, context: Any) -> bool:
        return _check(context, sent)

    @event.listens_for(dialect, "do_execute_no_params")
    def _execute_no_params(_cursor: Any, sent: str, context: Any) -> bool:
        return _check(context, sent)


def _check(context: Any, sent: str) -> bool:
    connection = context.root_connection
    scope = active_scope(connection)
    if scope is None:
        return False
    joined = connection.connection
    if isinstance(joined, JoinedConnection) and not joined.wrote and is_write(sent):
        joined.wrote = caller()  # its first write: where an uncommitted change is reported
    return bool(scope._check_statement(sent))


def _send_savepoints_as_text(dialect: Dialect) -> None:
    """Send SAVEPOINT statements as plain SQL instead of compiling a clause for each.

    Every test opens at least one savepoint and every commit in the code under test another; the
    compiled path costs a third of a round trip more. The statements, events and errors are the same.
    A joined connection's savepoints get names of their own (see `JoinedConnection.savepoint_name`).
    """
    quote = dialect.identifier_preparer.quote

    def unique(connection: Connection, name: str) -> str:
        joined = connection.connection
        return quote(joined.savepoint_name(name) if isinstance(joined, JoinedConnection) else name)

    def do_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"SAVEPOINT {unique(connection, name)}")

    def do_release_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {unique(connection, name)}")

    def do_rollback_to_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {unique(connection, name)}")

    dialect.do_savepoint = do_savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint  # type: ignore[method-assign]
