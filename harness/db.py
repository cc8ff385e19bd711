"""Engines, sessions and rollback scopes for tests on SQLAlchemy asyncio.

A rollback scope is SQLAlchemy's "Joining a Session into an External Transaction" recipe: one
connection, one outer transaction that is always rolled back, and sessions joined to it with
``join_transaction_mode="create_savepoint"`` so that ``commit()`` and ``rollback()`` in the code
under test act on savepoints. harness adds the parts the recipe leaves to you: the SQLite driver
fix without which committed rows leak, guards that stop code from escaping the transaction, and
nesting for data shared by a class of tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import sys
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from weakref import WeakKeyDictionary

import greenlet
import sqlalchemy
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Dialect, Engine, Transaction, make_url
from sqlalchemy.exc import ArgumentError, SAWarning
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util import greenlet_spawn

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

from harness.exceptions import (
    ConcurrentSessionError,
    DatabaseConfigError,
    IsolationError,
    IsolationProbeError,
    ScopeError,
    UnsafeDatabaseError,
)
from harness.network import is_loopback_ip

__all__ = [
    "CommitScope",
    "RollbackScope",
    "bind_sessions",
    "check_test_database",
    "commit_scope",
    "create_test_engine",
    "normalize_url",
    "probe_isolation",
    "rollback_scope",
]

DEFAULT_URL = "sqlite+aiosqlite://"
TEST_PREFIX = "test_"
_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_DRIVER_PACKAGES = {"aiosqlite": "aiosqlite", "asyncpg": "harness[postgres]"}
_BACKEND_ALIASES = {"postgres": "postgresql", "pgsql": "postgresql"}
_MEMORY_NAMES = {None, "", ":memory:"}

# Statements that end or restart the outer test transaction when sent as raw SQL.
_TRANSACTION_CONTROL = re.compile(
    r"(COMMIT|END|ABORT|ROLLBACK(?!\s+(WORK\s+|TRANSACTION\s+)?TO\b)|BEGIN|START\s+TRANSACTION|PREPARE\s+TRANSACTION)\b",
    re.IGNORECASE,
)
_SAVEPOINT_STATEMENT = re.compile(
    r"(SAVEPOINT|RELEASE(?:\s+SAVEPOINT)?|ROLLBACK(?:\s+(?:WORK|TRANSACTION))?\s+TO(?:\s+SAVEPOINT)?)\s+(\"[^\"]+\"|\w+)",
    re.IGNORECASE,
)
# Whitespace and comments before a statement's first keyword.
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
# URL query keys and connect_args that would choose another database or server than the URL names.
_REDIRECTING_KEYS = ("database", "dbname", "dsn", "db", "user_database")
_SCOPE_KEY = "harness.scope"
_LAZY_BEGIN = "harness_lazy_begin"

# The session that factories and other helpers write through: set by the innermost active rollback
# scope (or by harness.factories.use_session) and read with current_session().
_current_session: ContextVar[AsyncSession | None] = ContextVar("harness_current_session", default=None)
_CONCURRENCY_ADVICE = (
    "Every session in a rollback scope shares the test's one connection, so they cannot run concurrently "
    "(asyncio.gather over sessions). Run them one after another, or test concurrency with real commits "
    "on separate connections."
)
# Where library frames live: the packages of SQLAlchemy, greenlet, asyncio and harness, and contextlib.
_SKIPPED_FILES = (
    *(os.path.dirname(module.__file__ or "") + os.sep for module in (sqlalchemy, greenlet, asyncio)),
    os.path.dirname(__file__) + os.sep,
    contextlib.__file__,
    "<",  # generated code: SQLAlchemy's decorators, <frozen …>
)


# -- URLs ------------------------------------------------------------------------------------------


def normalize_url(url: str | URL | None) -> URL:
    """Return ``url`` as an async SQLAlchemy URL, choosing the async driver when none is named.

    ``sqlite://`` becomes ``sqlite+aiosqlite://`` and ``postgresql://`` (or ``postgres://``)
    becomes ``postgresql+asyncpg://``. ``None`` means the embedded default, in-memory SQLite.
    Raises `DatabaseConfigError` for schemes and drivers harness does not support, and when the
    driver is not installed.
    """
    raw = DEFAULT_URL if url is None else url
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        msg = f"{str(raw)!r} is not a database URL. Use a URL such as 'sqlite+aiosqlite:///test_app.db' or 'postgresql+asyncpg://user@127.0.0.1:5432/app'."
        raise DatabaseConfigError(msg) from exc
    backend = _BACKEND_ALIASES.get(parsed.get_backend_name(), parsed.get_backend_name())
    driver = parsed.get_driver_name() if "+" in parsed.drivername else _DRIVERS.get(backend)
    if backend not in _DRIVERS:
        msg = f"Unsupported database URL scheme {parsed.drivername!r}. harness supports 'sqlite+aiosqlite' and 'postgresql+asyncpg'."
        raise DatabaseConfigError(msg)
    if driver != _DRIVERS[backend]:
        msg = f"Unsupported driver {driver!r} for {backend}: harness tests run on SQLAlchemy asyncio with {_DRIVERS[backend]!r}. Use '{backend}+{_DRIVERS[backend]}://' in the URL."
        raise DatabaseConfigError(msg)
    _require_driver(_DRIVERS[backend])
    return parsed.set(drivername=f"{backend}+{_DRIVERS[backend]}")


def _require_driver(module: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        msg = f"The {module!r} driver is not installed. Install it with: pip install '{_DRIVER_PACKAGES[module]}'"
        raise DatabaseConfigError(msg) from exc


def is_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database."""
    if url.get_backend_name() != "sqlite":
        return False
    uri = str(url.query.get("uri", "")).lower() in {"true", "1"}
    return url.database in _MEMORY_NAMES or (uri and url.query.get("mode") == "memory")


def _is_loopback(host: str) -> bool:
    # Stricter than the network guard on names: a database host is `localhost` or an address.
    return (
        host == "localhost" or host.startswith("/") or is_loopback_ip(host)
    )  # "/…": a Unix socket directory


def check_test_database(url: str | URL, *, allow_remote: bool = False) -> URL:
    """Refuse any database that harness must not write to; return the normalized URL.

    A test database is an in-memory SQLite database, a SQLite file whose name starts with
    ``test_``, or a PostgreSQL database whose name starts with ``test_`` on a loopback address.
    ``allow_remote=True`` is the explicit opt-in for a server on another host.
    """
    parsed = normalize_url(url)
    _refuse_redirects(dict(parsed.query), "URL query")
    if parsed.get_backend_name() == "sqlite":
        if not is_memory(parsed) and not Path(str(parsed.database)).name.startswith(TEST_PREFIX):
            msg = (
                f"Refusing to use SQLite file {parsed.database!r}: harness only writes to databases it created for tests, "
                f"whose file name starts with {TEST_PREFIX!r}. Use ':memory:', a file such as 'test_app.db', "
                "or let harness.TestDatabase create one."
            )
            raise UnsafeDatabaseError(msg)
        return parsed
    if not str(parsed.database or "").startswith(TEST_PREFIX):
        msg = (
            f"Refusing to use database {parsed.database!r}: harness only writes to databases it created for tests, "
            f"whose name starts with {TEST_PREFIX!r}. Pass the server URL to harness.TestDatabase "
            f"(or the harness_database_url setting), which creates and owns '{TEST_PREFIX}{parsed.database or 'harness'}'."
        )
        raise UnsafeDatabaseError(msg)
    host = parsed.host or parsed.query.get("host") or os.environ.get("PGHOST") or "localhost"
    hosts = [host] if isinstance(host, str) else list(host)
    remote = [h for h in hosts if not _is_loopback(h)]
    if remote and not allow_remote:
        msg = (
            f"Refusing to use database server {remote[0]!r}: it is not a loopback address, and tests should not "
            "reach a shared server by accident. If this server is really a throwaway test server, opt in with "
            "allow_remote=True (harness_allow_remote_database = true in the pytest configuration)."
        )
        raise UnsafeDatabaseError(msg)
    return parsed


# -- Engines ---------------------------------------------------------------------------------------


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

    The URL must name a test database (see `check_test_database`); other keyword arguments go to
    `sqlalchemy.ext.asyncio.create_async_engine`.

    Usage::

        engine = create_test_engine("postgresql+asyncpg://postgres@127.0.0.1/test_app")
        async with rollback_scope(engine) as session:
            ...
    """
    parsed = check_test_database(url if url is not None else DEFAULT_URL, allow_remote=allow_remote)
    options: dict[str, Any] = dict(engine_options)
    _refuse_redirects(options.get("connect_args", {}), "connect_args")
    if "host" in options.get("connect_args", {}):
        check_test_database(parsed.set(host=str(options["connect_args"]["host"])), allow_remote=allow_remote)
    if parsed.get_backend_name() == "postgresql":
        connect_args = dict(options.pop("connect_args", {}))
        settings = {"application_name": "harness", **connect_args.pop("server_settings", {})}
        for name, seconds in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
            if seconds is not None:
                settings.setdefault(name, f"{int(seconds * 1000)}ms")
        options["connect_args"] = {"timeout": 10, **connect_args, "server_settings": settings}
    engine = create_async_engine(parsed, **options)
    _send_savepoints_as_text(engine.sync_engine.dialect)
    if parsed.get_backend_name() == "sqlite":
        _fix_sqlite_transactions(engine.sync_engine)
    else:
        event.listen(engine.sync_engine, "handle_error", _explain_timeouts)
        event.listen(engine.sync_engine, "connect", _check_connected_database)
    _guard(engine.sync_engine)
    _test_engines.add(engine.sync_engine)
    return engine


_test_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _refuse_redirects(arguments: dict[str, Any], where: str) -> None:
    redirecting = sorted(key for key in arguments if key in _REDIRECTING_KEYS)
    if redirecting:
        msg = (
            f"Refusing {where} option {redirecting[0]!r}: it would connect to another database than the URL names, "
            "past harness's test-database check. Put the database name in the URL's path."
        )
        raise UnsafeDatabaseError(msg)


def _check_connected_database(dbapi_connection: Any, _record: Any) -> None:
    # The last word on safety: whatever the URL and options said, the server must say test_.
    cursor = dbapi_connection.cursor()
    cursor.execute("SELECT current_database()")
    name = cursor.fetchone()[0]
    cursor.close()
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

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Straight to the driver, once per test: aiosqlite's Connection.execute is one trip to its
        # thread, where a cursor would take three (create, execute, close).
        # Under real commits, concurrent transactions that read and then write would deadlock on
        # SQLite's lock upgrade (SQLITE_BUSY at once); IMMEDIATE makes them wait for the lock instead.
        # The test's own session (a commit scope's) begins lazily instead, so its reads lock nothing.
        if connection.get_execution_options().get(_LAZY_BEGIN, False):
            return  # see _begin_before_writing
        guard = _guards.get(engine)
        begin = "BEGIN IMMEDIATE" if guard is not None and guard.commit_scopes else "BEGIN"
        await_(connection.connection.driver_connection.execute(begin))  # type: ignore[union-attr]

    @event.listens_for(engine, "before_cursor_execute")
    def _begin_before_writing(connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        # A commit scope's own session reads outside a transaction, so each read sees what other
        # connections committed (as READ COMMITTED does on PostgreSQL) and holds no lock that would
        # stop them; its first write begins the transaction.
        if not connection.get_execution_options().get(_LAZY_BEGIN, False):
            return
        driver = connection.connection.driver_connection
        if not driver.in_transaction and _LEADING_NOISE.sub("", statement)[:6].upper() != "SELECT":  # type: ignore[union-attr]
            await_(driver.execute("BEGIN"))  # type: ignore[union-attr]


_TIMEOUT_NOTES = {
    "55P03": (
        "harness: the statement waited longer than lock_timeout for a row or table lock held by another "
        "connection. Inside a test this is usually code that opened its own connection while the test's "
        "transaction holds the lock: bind that code to the test with harness.bind_sessions(), or raise the "
        "limit with create_test_engine(lock_timeout=...)."
    ),
    "57014": (
        "harness: the statement ran longer than statement_timeout and PostgreSQL cancelled it. Raise the "
        "limit with create_test_engine(statement_timeout=...) if the query is meant to be slow."
    ),
}


def _send_savepoints_as_text(dialect: Dialect) -> None:
    """Send SAVEPOINT statements as plain SQL instead of compiling a clause for each.

    Every test opens at least one savepoint and every commit in the code under test another; the
    compiled path costs a third of a round trip more. The statements, events and errors are the same.
    """
    quote = dialect.identifier_preparer.quote

    def do_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"SAVEPOINT {quote(name)}")

    def do_release_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {quote(name)}")

    def do_rollback_to_savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {quote(name)}")

    dialect.do_savepoint = do_savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint  # type: ignore[method-assign]


def _explain_timeouts(context: Any) -> None:
    code = getattr(context.original_exception, "sqlstate", None)
    if code in _TIMEOUT_NOTES and context.sqlalchemy_exception is not None:
        context.sqlalchemy_exception.add_note(_TIMEOUT_NOTES[code])


# -- Guards ----------------------------------------------------------------------------------------


def _caller() -> str:
    """The innermost frame of the code that called into SQLAlchemy, as 'file:line in function'.

    Inside SQLAlchemy's greenlet, the awaiting coroutine's frames hang off the parent greenlet. This
    runs for every savepoint, so it stops at the first frame that is not a library's.
    """
    frame: FrameType | None = sys._getframe(1)
    parent = greenlet.getcurrent().parent
    while frame is not None:
        code = frame.f_code
        skipped = _SKIPPED_FILENAMES.get(code.co_filename)
        if skipped is None:
            skipped = _SKIPPED_FILENAMES[code.co_filename] = code.co_filename.startswith(_SKIPPED_FILES)
        if not skipped:
            return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back
        if frame is None and parent is not None and parent.gr_frame is not None:
            frame, parent = parent.gr_frame, None
    return "an unknown place"


_SKIPPED_FILENAMES: dict[str, bool] = {}


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a sync caller
        return None


def _task_name(task: asyncio.Task[Any] | None) -> str:
    return task.get_name() if task is not None else "no task"


@dataclass
class _EngineGuard:
    """Per-engine state: which connection belongs to an active scope."""

    scopes: int = 0
    own_checkout: bool = False  # harness opening or closing a scope's connection, not the code under test
    commit_scopes: int = 0  # real commits from several connections: SQLite writers must queue


_guards: WeakKeyDictionary[Engine, _EngineGuard] = WeakKeyDictionary()


def _guard(engine: Engine) -> _EngineGuard:
    if engine in _guards:
        return _guards[engine]
    guard = _guards[engine] = _EngineGuard()

    @event.listens_for(engine, "checkout")
    def _checkout(_dbapi: Any, _record: Any, _proxy: Any) -> None:
        if guard.scopes and not guard.own_checkout:
            msg = (
                f"A second database connection was opened at {_caller()} while a rollback scope holds the test's "
                "connection. Its writes would not be rolled back, and it cannot see the test's data. Bind the "
                "code's sessionmaker or FastAPI dependency to the test with harness.bind_sessions(), or pass it "
                "the test's session."
            )
            raise IsolationError(msg)

    _guard_dialect(engine.dialect)
    return guard


def _guard_dialect(dialect: Dialect) -> None:
    """Stop commits of a scope's outer transaction and raw SQL that would end it; track savepoints.

    These hook the dialect rather than Connection events: a single Connection listener puts every
    connection of the engine on SQLAlchemy's event path, which costs each test a fifth of a round
    trip. Engines made with ``execution_options()`` share their base engine's dialect: hooked once.
    """
    if dialect in _guarded_dialects:
        return
    _guarded_dialects.add(dialect)
    commit = dialect.do_commit

    def do_commit(pool_connection: Any) -> None:
        scope = _active_scope(pool_connection)
        if scope is not None:
            scope._root()._commit_stopped = True
            scope.fail(
                IsolationError(
                    f"The test's outer transaction was committed at {_caller()} (Connection.commit() on the "
                    "scope's connection, for example through session.connection()). harness stopped the commit; "
                    "call session.commit() instead, which releases a savepoint and keeps the test isolated."
                )
            )
        commit(pool_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]

    # A listener returning True tells SQLAlchemy the statement is done: harness skips one that would fail.
    @event.listens_for(dialect, "do_execute")
    @event.listens_for(dialect, "do_executemany")
    def _execute(_cursor: Any, sent: str, _parameters: Any, context: Any) -> bool:
        return _check_statement(context, sent)

    @event.listens_for(dialect, "do_execute_no_params")
    def _execute_no_params(_cursor: Any, sent: str, context: Any) -> bool:
        return _check_statement(context, sent)


_guarded_dialects: weakref.WeakSet[Dialect] = weakref.WeakSet()


def _active_scope(connection: Any) -> RollbackScope | None:
    """The active rollback scope holding ``connection`` (SQLAlchemy's or the pool's), if any."""
    try:
        scope: RollbackScope | None = connection.info.get(_SCOPE_KEY)
    except NotImplementedError:  # the bare DBAPI connection of SQLAlchemy's first-connect queries
        return None
    return scope if scope is not None and scope.active else None


def _check_statement(context: Any, sent: str) -> bool:
    """Track the savepoints of a scope's connection and stop statements that would escape it.

    Returns True for a statement that must not reach the database (it has nothing left to do).
    """
    scope = _active_scope(context.root_connection)
    if scope is None:
        return False
    keyword_start = _LEADING_NOISE.match(sent)
    statement = sent[keyword_start.end() if keyword_start else 0 :]
    savepoint = _SAVEPOINT_STATEMENT.match(statement)
    if savepoint is not None:
        verb, name = savepoint.group(1).split()[0].upper(), savepoint.group(2).strip('"')
        if verb == "SAVEPOINT":
            task = _current_task()
            scope.savepoints.append(_Savepoint(name, task, _caller()))
            if task is not None:
                scope._root()._tasks.add(task)
        elif scope._lost_to_overlap(name):
            # After sessions overlapped, another task's rollback may have discarded this savepoint
            # already; ending it would replace the ConcurrentSessionError with "savepoint does not
            # exist". A rollback has nothing left to do (the scope's exit rolls everything back);
            # a release would report a commit that cannot happen, so it gets the error.
            if verb == "RELEASE":
                scope.check_not_broken()
            return True
        else:
            scope.end_savepoint(name, "released" if verb == "RELEASE" else "rolled back")
        return False
    scope.check_not_broken()
    if _TRANSACTION_CONTROL.match(statement):
        scope.fail(
            IsolationError(
                f"Raw SQL {sent.strip()!r} at {_caller()} would end the test's outer transaction and make "
                "its writes permanent. harness stopped it; use session.commit() / session.rollback() (or "
                "session.begin_nested()) so the test stays isolated."
            )
        )
    scope.check_not_underneath_another_task(statement)
    return False


@dataclass
class _Savepoint:
    name: str
    task: asyncio.Task[Any] | None
    where: str


# -- Rollback scopes -------------------------------------------------------------------------------


@dataclass(eq=False)
class RollbackScope:
    """An async context manager that yields an `AsyncSession` whose work is always rolled back.

    Made by `rollback_scope`; see there. ``connection`` is the scope's connection while it is
    active; ``parent`` is the enclosing scope of a nested one.
    """

    bind: AsyncEngine | AsyncSession
    session_options: dict[str, Any] = field(default_factory=dict)
    parent: RollbackScope | None = None
    connection: AsyncConnection | None = None
    session: AsyncSession | None = None
    active: bool = False
    savepoints: list[_Savepoint] = field(default_factory=list)
    _entered: bool = False
    _closing: bool = False
    _violation: IsolationError | None = None
    _commit_stopped: bool = False
    _trusted: bool = False  # probe_isolation tests engines that harness did not make
    _tasks: weakref.WeakSet[asyncio.Task[Any]] = field(default_factory=weakref.WeakSet)
    _transaction: Transaction | None = None
    _guard: _EngineGuard | None = None
    _outer_session: AsyncSession | None = None

    def fail(self, error: IsolationError) -> None:
        """Record an isolation violation, poison the connection and raise ``error`` now."""
        root = self._root()
        if root._violation is None:
            root._violation = error
        # SQLAlchemy's bookkeeping of the sessions that unwind after this warns about savepoints
        # that were ended out of order; the error below already explains that.
        warnings.filterwarnings("ignore", "nested transaction already deassociated", SAWarning)
        raise error

    def check_not_broken(self) -> None:
        """After sessions overlapped, stop every further statement (the other task's too)."""
        violation = self._root()._violation
        if isinstance(violation, ConcurrentSessionError):
            raise ConcurrentSessionError(*violation.args)

    def check_not_underneath_another_task(self, statement: str) -> None:
        """Fail when a task runs SQL below a savepoint that another task still has open.

        That is sessions interleaving on the shared connection (asyncio.gather): caught here, at the
        first statement, before the interleaving produces wrong data or 'savepoint does not exist'.
        A task that owns no savepoint (a request handler handed the test's session) is not checked.
        """
        root = self._root()
        if not root.savepoints or root._closing:
            return
        task = _current_task()
        top = root.savepoints[-1]
        if task is None or top.task is task:
            return
        mine = [s for s in root.savepoints if s.task is task]
        if mine:
            root.fail(
                ConcurrentSessionError(
                    f"Two sessions used the test's connection at the same time: task {_task_name(task)!r} ran "
                    f"{' '.join(statement.split())[:80]!r} at {_caller()} inside its savepoint {mine[-1].name} "
                    f"(opened at {mine[-1].where}) while task {_task_name(top.task)!r} had savepoint {top.name} open "
                    f"above it (opened at {top.where}). {_CONCURRENCY_ADVICE}"
                )
            )

    def _lost_to_overlap(self, name: str) -> bool:
        """Whether overlapping sessions broke the scope and savepoint ``name`` has already ended."""
        root = self._root()
        return isinstance(root._violation, ConcurrentSessionError) and name not in (
            s.name for s in root.savepoints
        )

    def end_savepoint(self, name: str, how: str) -> None:
        """Track a savepoint's end; overlapping sessions end one that is not the innermost."""
        root = self._root()
        names = [s.name for s in root.savepoints]
        if name not in names:
            return
        index = names.index(name)
        above = root.savepoints[index + 1 :]
        if above and not root._closing and root.active and root._violation is None:
            ended, still_open = root.savepoints[index], above[-1]
            root.fail(
                ConcurrentSessionError(
                    f"Two sessions used the test's connection in overlapping transactions: savepoint {name} "
                    f"(opened in task {_task_name(ended.task)!r} at {ended.where}) was {how} at {_caller()} while savepoint "
                    f"{still_open.name} (opened in task {_task_name(still_open.task)!r} at {still_open.where}) was "
                    f"still open. "
                    + (
                        "Both were opened by one task: end the later session (commit or close it) before the earlier one."
                        if ended.task is still_open.task
                        else _CONCURRENCY_ADVICE
                    )
                )
            )
        del root.savepoints[index:]

    async def _wait_for_other_tasks(self) -> None:
        # Tasks that overlapped (the rest of an asyncio.gather) may still be mid-statement; the
        # rollback must wait for them (asyncpg allows one operation at a time). They stop at their
        # next statement, which check_not_broken refuses.
        current = _current_task()
        others = {task for task in self._tasks if task is not current and not task.done()}
        if others:
            await asyncio.wait(others, timeout=10)

    def _connect(self, engine: Engine, guard: _EngineGuard) -> Connection:
        guard.own_checkout = True
        try:
            connection = engine.connect()
        finally:
            guard.own_checkout = False
        try:
            self._transaction = connection.begin()
        except BaseException:  # cancelled or failed: the connection goes back, not to the GC
            connection.close()
            raise
        connection.info[_SCOPE_KEY] = self
        return connection

    def _close(self, connection: Connection) -> None:
        """Roll back, close the session and, for the outermost scope, return the connection."""
        invalidated = connection.invalidated  # ending the scope reconnects an invalidated connection
        try:
            # The outer ROLLBACK discards the sessions' savepoints too: rolling it back first saves the
            # session a ROLLBACK TO SAVEPOINT round trip on close. A nested scope's savepoint must
            # outlive the session's own, so it is rolled back after the session closes.
            if self.parent is None:
                self._rollback()
            if self.session is not None:
                self.session.sync_session.close()
            if self.parent is not None:
                self._rollback()
        finally:
            if self.parent is None:
                connection.info.pop(_SCOPE_KEY, None)
                if self._commit_stopped:
                    # SQLAlchemy's transaction state is unknown after a stopped commit: closing the
                    # DBAPI connection is the one way that always rolls back on the server.
                    connection.invalidate()
                invalidated = invalidated or connection.invalidated
                connection.close()
                if invalidated and connection.dialect.name == "sqlite":
                    # sqlite3 defers closing a connection while a statement of it is alive, and
                    # SQLAlchemy 2.0's aiosqlite adapter leaves a failed statement's cursor in the
                    # error's traceback: until the GC frees it, the file stays locked and the next
                    # test fails with "database is locked".
                    gc.collect()

    def _rollback(self) -> None:
        if self._transaction is not None and self._transaction.is_active and not self._root()._commit_stopped:
            self._transaction.rollback()

    def _root(self) -> RollbackScope:
        return self.parent._root() if self.parent else self

    async def __aenter__(self) -> AsyncSession:
        if self._entered:
            msg = "This rollback scope was already used. Call rollback_scope() again for a new scope."
            raise ScopeError(msg)
        self._entered = True
        if isinstance(self.bind, AsyncSession):
            parent = self.bind.info.get(_SCOPE_KEY)
            if isinstance(parent, CommitScope):
                msg = (
                    "rollback_scope() cannot nest in the session of a commit scope (RealCommitsTest): its "
                    "commits are real. Pass the engine instead, to roll back on a connection of its own."
                )
                raise ScopeError(msg)
            if not isinstance(parent, RollbackScope):
                msg = "rollback_scope() takes an AsyncEngine, or the session of an enclosing rollback scope to nest in; this session belongs to no scope."
                raise ScopeError(msg)
            if not parent.active or parent.connection is None:
                msg = "Cannot nest a rollback scope in a scope that has already ended."
                raise ScopeError(msg)
            self.parent, self.connection = parent, parent.connection
            self._transaction = await self.connection.run_sync(Connection.begin_nested)
        elif isinstance(self.bind, AsyncEngine):
            _check_scope_engine(self.bind, self._trusted)
            self._guard = _guard(self.bind.sync_engine)
            # One hop into SQLAlchemy's greenlet for connect + begin (and one for the exit): each hop
            # costs about as much as a tenth of a round trip, and isolation is paid on every test.
            connection = await greenlet_spawn(self._connect, self.bind.sync_engine, self._guard)
            self.connection = AsyncConnection(self.bind, connection)
            self._guard.scopes += 1
        else:  # untyped callers
            msg = f"rollback_scope() takes an AsyncEngine or a scope's AsyncSession, got {type(self.bind).__name__}."  # type: ignore[unreachable]
            raise TypeError(msg)
        self.active = True
        self.session = self.new_session()
        self._outer_session = _current_session.get()
        _current_session.set(self.session)
        return self.session

    def new_session(self, **options: Any) -> AsyncSession:
        """A new `AsyncSession` joined to this scope's transaction."""
        if not self.active or self.connection is None:
            msg = "The rollback scope has ended; its connection is gone. Open a new scope with rollback_scope()."
            raise ScopeError(msg)
        kwargs = {"expire_on_commit": False, **self.session_options, **options}
        session = AsyncSession(
            bind=self.connection,
            join_transaction_mode="create_savepoint",
            sync_session_class=_ScopeSession,
            **kwargs,
        )
        session.info[_SCOPE_KEY] = self
        return session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        root = self._root()
        self._closing = root._closing = True
        connection = self.connection
        assert connection is not None
        try:
            if isinstance(root._violation, ConcurrentSessionError):
                await root._wait_for_other_tasks()
            if self._guard is not None:  # ending the scope may reconnect an invalidated connection
                self._guard.own_checkout = True
            await connection.run_sync(self._close)
        finally:
            self.active = root._closing = False
            if _current_session.get() is self.session:
                _current_session.set(self._outer_session)
            if self._guard is not None:
                self._guard.scopes -= 1
                self._guard.own_checkout = False
        # An escape attempt swallowed by the code under test still fails the test; overlapping
        # sessions already failed in their task (gather re-raises it), so they are not repeated.
        swallowed = root._violation is not None and not isinstance(root._violation, ConcurrentSessionError)
        if swallowed and exc is None and self.parent is None:
            # The message names where it happened; the old traceback is SQLAlchemy's internals.
            raise root._violation.with_traceback(None)  # type: ignore[union-attr]


def _check_scope_engine(engine: AsyncEngine, trusted: bool) -> None:
    if engine.sync_engine in _test_engines:  # vetted, fixed and guarded by create_test_engine
        return
    check_test_database(engine.url, allow_remote=True)
    if not trusted and engine.dialect.name == "sqlite":
        msg = (
            "This SQLite engine was not made by harness.create_test_engine(): without harness's SQLite fix, rows "
            "committed in a rollback scope survive the rollback. Create the engine with create_test_engine()."
        )
        raise DatabaseConfigError(msg)


class _ScopeSession(Session):
    """The sync session behind a scope's AsyncSession; refuses work after the scope ended."""


@event.listens_for(_ScopeSession, "after_transaction_create")
def _check_scope_active(session: Session, transaction: SessionTransaction) -> None:
    scope = session.info.get(_SCOPE_KEY)
    if scope is not None and not scope.active and transaction.parent is None and not scope._closing:
        msg = (
            "A session of a rollback scope was used after the scope ended. Use it only inside "
            "`async with rollback_scope(...)`; under pytest, do not keep db_session beyond its test."
        )
        raise ScopeError(msg)


def rollback_scope(bind: AsyncEngine | AsyncSession, **session_options: Any) -> RollbackScope:
    """Open a scope whose session's work is rolled back on exit, even if the code commits.

    With an `AsyncEngine`, the scope checks out one connection, begins the outer transaction and
    yields an `AsyncSession` joined to it with ``join_transaction_mode="create_savepoint"``: the
    session's ``commit()`` and ``rollback()`` act on savepoints, and on exit everything is rolled
    back and the connection returned. With the session of an active scope, the new scope nests
    inside it in a savepoint: data made in the outer scope (shared by a class of tests) is seen by
    the inner one, whose own work is discarded on exit.

    While a scope is active, harness stops code that would escape it: a commit of the outer
    transaction, raw ``COMMIT``/``ROLLBACK``/``BEGIN``, a second connection from the same engine,
    and sessions whose transactions overlap on the shared connection. Each raises an
    `IsolationError` where it happens, and again when the scope exits if the code swallowed it.

    Usage::

        async with rollback_scope(engine) as class_session:
            class_session.add(Campaign(name="shared"))
            await class_session.flush()
            async with rollback_scope(class_session) as session:
                ...  # sees the campaign; its own rows vanish at exit
    """
    return RollbackScope(bind, dict(session_options))


# -- Real commits ----------------------------------------------------------------------------------


@dataclass
class _TableState:
    count: int
    keys: set[tuple[Any, ...]] | None  # primary keys, read only for tables that had rows


@dataclass(eq=False)
class CommitScope:
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
        _check_scope_engine(self.engine, trusted=False)
        self._tables = await _user_tables(self.engine)
        self._before = await _table_states(self.engine, self._tables, {})
        _guard(self.engine.sync_engine).commit_scopes += 1
        self.active = True
        self.session = self.new_session(bind=self.engine.execution_options(**{_LAZY_BEGIN: True}))
        self._outer_session = _current_session.get()
        _current_session.set(self.session)
        return self.session

    def new_session(self, **options: Any) -> AsyncSession:
        """A new `AsyncSession` on the scope's engine; its commits are real."""
        if not self.active:
            msg = "The commit scope has ended. Open a new scope with commit_scope()."
            raise ScopeError(msg)
        kwargs = {"bind": self.engine, "expire_on_commit": False, **self.session_options, **options}
        session = AsyncSession(**kwargs)
        session.info[_SCOPE_KEY] = self
        return session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.session is not None:
                await self.session.close()
        finally:
            self.active = False
            if _current_session.get() is self.session:
                _current_session.set(self._outer_session)
        try:
            lost = await self._delete_new_rows()
        finally:
            _guard(self.engine.sync_engine).commit_scopes -= 1
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
        (None, _PROBE_TABLE)
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


def commit_scope(engine: AsyncEngine, **session_options: Any) -> CommitScope:
    """Open a scope whose sessions commit for real; on exit, delete the rows they added.

    For code that needs several connections at once (background workers, ``asyncio.gather`` over
    separate sessions), which a rollback scope's single connection cannot serve. The scope records
    each table's rows on entry; on exit it deletes the rows added since, only in the tables that
    changed, children first. Rows that existed before stay (changes to them are not undone), and
    deleting one of them is an `IsolationError`, since it cannot be brought back. The engine must
    be a test engine, as for `rollback_scope`.

    Usage::

        async with commit_scope(engine) as session:
            await asyncio.gather(worker.run(), worker.run())  # each opens its own session
            assert await session.scalar(select(func.count()).select_from(Job)) == 2
    """
    return CommitScope(engine, dict(session_options))


def current_session() -> AsyncSession | None:
    """The session of the innermost active rollback scope (or the one set by `use_session`), if any."""
    session = _current_session.get()
    if session is not None:
        scope = session.info.get(_SCOPE_KEY)
        if isinstance(scope, RollbackScope | CommitScope) and not scope.active:
            return None
    return session


def scope_of(session: AsyncSession) -> RollbackScope | CommitScope:
    """The active rollback (or commit) scope that ``session`` belongs to."""
    scope = session.info.get(_SCOPE_KEY)
    if not isinstance(scope, RollbackScope | CommitScope):
        msg = "This session does not belong to a rollback scope. Pass the session yielded by rollback_scope() (db_session under pytest)."
        raise ScopeError(msg)
    if not scope.active:
        msg = "The scope of this session has ended. Bind inside `async with rollback_scope(...)`."
        raise ScopeError(msg)
    return scope


@contextlib.contextmanager
def bind_sessions(
    session: AsyncSession,
    *sessionmakers: async_sessionmaker[Any],
    app: Any = None,
    dependencies: Iterable[Callable[..., Any]] = (),
) -> Iterator[None]:
    """Point the application's own session factories at a rollback scope; restore them on exit.

    Each ``async_sessionmaker`` is reconfigured to make sessions joined to the scope's transaction
    (so the app's ``commit()`` becomes a savepoint release), and each FastAPI-style dependency in
    ``dependencies`` is overridden in ``app.dependency_overrides`` with one that yields such a
    session per request. What the app writes is visible to ``session`` and gone after the scope.
    With the session of a `commit_scope`, the factories are bound to its engine and commit for real.

    Usage::

        async with rollback_scope(engine) as session:
            with bind_sessions(session, app_sessionmaker, app=app, dependencies=[get_db]):
                await service.run()
    """
    scope = scope_of(session)
    for maker in sessionmakers:
        if not isinstance(maker, async_sessionmaker):  # untyped callers
            msg = f"bind_sessions() binds async_sessionmaker objects, got {type(maker).__name__}. Pass the app's async_sessionmaker(...)."  # type: ignore[unreachable]
            raise TypeError(msg)
    dependencies = list(dependencies)
    if dependencies and not hasattr(app, "dependency_overrides"):
        msg = (
            "bind_sessions(dependencies=...) needs app=<the FastAPI app> whose dependency_overrides it sets."
        )
        raise TypeError(msg)
    saved = [(maker, dict(maker.kw)) for maker in sessionmakers]
    overrides: dict[Any, Any] = app.dependency_overrides if dependencies else {}
    saved_overrides = dict(overrides)

    async def _scoped_session() -> AsyncIterator[AsyncSession]:
        async with scope.new_session() as request_session:
            yield request_session

    binding: dict[str, Any] = (
        {"bind": scope.engine}
        if isinstance(scope, CommitScope)
        else {"bind": scope.connection, "join_transaction_mode": "create_savepoint"}
    )
    for maker in sessionmakers:
        maker.configure(**binding)
    for dependency in dependencies:
        overrides[dependency] = _scoped_session
    try:
        yield
    finally:
        for maker, kw in saved:
            maker.kw.clear()
            maker.kw.update(kw)
        overrides.clear()
        overrides.update(saved_overrides)


# -- Start-up probe --------------------------------------------------------------------------------

_PROBE_TABLE = "harness_isolation_probe"


async def probe_isolation(engine: AsyncEngine) -> None:
    """Check that a commit inside a rollback scope really is rolled back on this engine.

    Creates a scratch table, commits a row in a scope, ends the scope and counts the rows from a
    fresh connection. Raises `IsolationProbeError` if the row survived (a driver that leaks).
    """
    check_test_database(engine.url, allow_remote=True)
    async with engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE IF NOT EXISTS {_PROBE_TABLE} (id INTEGER)"))
    try:
        async with RollbackScope(engine, _trusted=True) as session:
            await session.execute(text(f"INSERT INTO {_PROBE_TABLE} (id) VALUES (1)"))
            await session.commit()
            async with session.begin_nested():
                await session.execute(text(f"INSERT INTO {_PROBE_TABLE} (id) VALUES (2)"))
            await session.commit()
        async with engine.connect() as connection:
            leaked = (await connection.execute(text(f"SELECT count(*) FROM {_PROBE_TABLE}"))).scalar_one()
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {_PROBE_TABLE}"))
    if leaked:
        msg = (
            f"Test isolation is broken on {engine.url.render_as_string(hide_password=True)!r}: {leaked} row(s) "
            "committed inside a rollback scope were still there after the scope rolled back. Create the engine "
            "with harness.create_test_engine(), which applies the driver fixes, instead of create_async_engine()."
        )
        raise IsolationProbeError(msg)
