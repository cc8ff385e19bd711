"""Rollback scopes: the test's transaction, always rolled back, and the guards that keep code inside it.

A rollback scope is SQLAlchemy's "Joining a Session into an External Transaction" recipe: one
connection, one outer transaction that is always rolled back, and sessions joined to it with
``join_transaction_mode="create_savepoint"`` so that ``commit()`` and ``rollback()`` in the code
under test act on savepoints. Connections that code opens meanwhile from the test engine, or from
an engine harness adopted, join the same transaction (`harness.db.joining`). harness adds the parts
the recipe leaves to you: the SQLite driver fix without which committed rows leak, guards that stop
code from escaping the transaction, and nesting for data shared by a class of tests.
"""

from __future__ import annotations

import asyncio
import gc
import re
import warnings
import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, Transaction
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.util import greenlet_spawn

from harness._where import caller
from harness.db.engines import LEADING_NOISE, SCOPE_KEY, EngineState, is_test_engine, prepare
from harness.db.urls import check_test_database
from harness.exceptions import ConcurrentSessionError, DatabaseConfigError, IsolationError, ScopeError

__all__ = ["RollbackScope", "Scope", "current_session", "rollback_scope", "scope_of"]

# Statements that end or restart the outer test transaction when sent as raw SQL.
_TRANSACTION_CONTROL = re.compile(
    r"(COMMIT|END|ABORT|ROLLBACK(?!\s+(WORK\s+|TRANSACTION\s+)?TO\b)|BEGIN|START\s+TRANSACTION|PREPARE\s+TRANSACTION)\b",
    re.IGNORECASE,
)
_SAVEPOINT_STATEMENT = re.compile(
    r"(SAVEPOINT|RELEASE(?:\s+SAVEPOINT)?|ROLLBACK(?:\s+(?:WORK|TRANSACTION))?\s+TO(?:\s+SAVEPOINT)?)\s+(\"[^\"]+\"|\w+)",
    re.IGNORECASE,
)
_DDL = re.compile(r"(CREATE|ALTER|DROP)\b", re.IGNORECASE)
_CONCURRENCY_ADVICE = (
    "Every session in a rollback scope shares the test's one connection, so they cannot run concurrently "
    "(asyncio.gather over sessions). Run them one after another, or test concurrency with real commits "
    "on separate connections."
)

# The session that factories and other helpers write through: set by the innermost active scope
# (or by harness.factories.use_session) and read with current_session().
current_session_var: ContextVar[AsyncSession | None] = ContextVar("harness_current_session", default=None)


class Scope:
    """What rollback and commit scopes have in common: a lifetime and sessions made inside it."""

    active: bool = False

    def new_session(self, **options: Any) -> AsyncSession:
        """A new `AsyncSession` of this scope."""
        raise NotImplementedError

    def _make_session(self, **options: Any) -> AsyncSession:
        populate_existing = options.pop("populate_existing", False)
        session: AsyncSession = options.pop("class_", AsyncSession)(**options)
        session.info[SCOPE_KEY] = self
        if populate_existing:
            refresh_on_every_query(session)
        return session


def current_session() -> AsyncSession | None:
    """The session of the innermost active scope (or the one set by `use_session`), if any."""
    session = current_session_var.get()
    if session is not None:
        scope = session.info.get(SCOPE_KEY)
        if isinstance(scope, Scope) and not scope.active:
            return None
    return session


def scope_of(session: AsyncSession) -> Scope:
    """The active rollback (or commit) scope that ``session`` belongs to."""
    scope = session.info.get(SCOPE_KEY)
    if not isinstance(scope, Scope):
        msg = "This session does not belong to a rollback scope. Pass the session yielded by rollback_scope() (db_session under pytest)."
        raise ScopeError(msg)
    if not scope.active:
        msg = "The scope of this session has ended. Bind inside `async with rollback_scope(...)`."
        raise ScopeError(msg)
    return scope


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a sync caller
        return None


def _task_name(task: asyncio.Task[Any] | None) -> str:
    return task.get_name() if task is not None else "no task"


@dataclass
class _Savepoint:
    name: str
    task: asyncio.Task[Any] | None
    where: str


@dataclass(eq=False)
class RollbackScope(Scope):
    """An async context manager that yields an `AsyncSession` whose work is always rolled back.

    Made by `rollback_scope`; see there. ``connection`` is the scope's connection while it is
    active; ``parent`` is the enclosing scope of a nested one. ``accepts_connections`` says whether
    connections that code opens join the scope while no nested scope is active: a class's data scope
    stops accepting them once its data is made, so that nothing between its tests writes into it.
    """

    bind: AsyncEngine | AsyncSession
    session_options: dict[str, Any] = field(default_factory=dict)
    parent: RollbackScope | None = None
    connection: AsyncConnection | None = None
    session: AsyncSession | None = None
    active: bool = False
    accepts_connections: bool = True
    savepoints: list[_Savepoint] = field(default_factory=list)
    _entered: bool = False
    _closing: bool = False
    _violation: IsolationError | None = None
    _commit_stopped: bool = False
    _trusted: bool = False  # probe_isolation tests engines that harness did not make
    _tasks: weakref.WeakSet[asyncio.Task[Any]] = field(default_factory=weakref.WeakSet)
    _transaction: Transaction | None = None
    _state: EngineState | None = None
    _outer_session: AsyncSession | None = None
    _ddl: bool = False
    _nested: list[RollbackScope] = field(default_factory=list)  # the root's active nested scopes
    _joined: list[Any] = field(default_factory=list)  # connections code opened in this scope
    _joined_commits: int = 0  # (root) how many joined transactions committed: see JoinedConnection
    _orphans: list[str] = field(default_factory=list)  # (root) savepoints of invalidated connections

    # -- entering and leaving ---------------------------------------------------------------------

    async def __aenter__(self) -> AsyncSession:
        if self._entered:
            msg = "This rollback scope was already used. Call rollback_scope() again for a new scope."
            raise ScopeError(msg)
        self._entered = True
        if isinstance(self.bind, AsyncSession):
            parent = self.bind.info.get(SCOPE_KEY)
            if isinstance(parent, Scope) and not isinstance(parent, RollbackScope):
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
            parent._root()._nested.append(self)
        elif isinstance(self.bind, AsyncEngine):
            check_scope_engine(self.bind, self._trusted)
            self._state = prepare(self.bind.sync_engine)
            # One hop into SQLAlchemy's greenlet for connect + begin (and one for the exit): each hop
            # costs about as much as a tenth of a round trip, and isolation is paid on every test.
            connection = await greenlet_spawn(self._connect, self.bind.sync_engine, self._state)
            self.connection = AsyncConnection(self.bind, connection)
            self._state.scopes.append(self)  # from now on, connections code opens join this one
        else:  # untyped callers
            msg = f"rollback_scope() takes an AsyncEngine or a scope's AsyncSession, got {type(self.bind).__name__}."  # type: ignore[unreachable]
            raise TypeError(msg)
        self.active = True
        self.session = self.new_session()
        self._outer_session = current_session_var.get()
        current_session_var.set(self.session)
        return self.session

    def new_session(self, **options: Any) -> AsyncSession:
        """A new `AsyncSession` joined to this scope's transaction."""
        if not self.active or self.connection is None:
            msg = "The rollback scope has ended; its connection is gone. Open a new scope with rollback_scope()."
            raise ScopeError(msg)
        options = {"expire_on_commit": False, **self.session_options, **options}
        return self._make_session(
            bind=self.connection,
            join_transaction_mode="create_savepoint",
            sync_session_class=_scope_session_class(options.pop("sync_session_class", Session)),
            **options,
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        root = self._root()
        self._closing = root._closing = True
        connection = self.connection
        assert connection is not None
        uncommitted = [
            joined.wrote for joined in self._joined if joined._savepoint is not None and joined.wrote
        ]
        if self in root._nested:
            root._nested.remove(self)
        try:
            if isinstance(root._violation, ConcurrentSessionError):
                await root._wait_for_other_tasks()
            if self._state is not None:  # no more joining; ending may reconnect an invalidated connection
                self._state.scopes.remove(self)
                self._state.own_checkout = True
            await connection.run_sync(self._close)
        finally:
            self.active = root._closing = False
            if current_session_var.get() is self.session:
                current_session_var.set(self._outer_session)
            if self._state is not None:
                self._state.own_checkout = False
                if self._ddl:
                    self._state.deferred = None
        # An escape attempt swallowed by the code under test still fails the test; overlapping
        # sessions already failed in their task (gather re-raises it), so they are not repeated.
        swallowed = root._violation is not None and not isinstance(root._violation, ConcurrentSessionError)
        if swallowed and exc is None and self.parent is None:
            # The message names where it happened; the old traceback is SQLAlchemy's internals.
            raise root._violation.with_traceback(None)  # type: ignore[union-attr]
        if uncommitted and exc is None and root._violation is None:
            msg = (
                f"Code wrote at {uncommitted[0]} and never committed: its transaction was still open when the "
                "test's scope ended. The test could read those rows, which production would not show to anyone "
                "else. Commit (or roll back, or close) the session or connection before the test ends."
            )
            raise IsolationError(msg)

    def _connect(self, engine: Engine, state: EngineState) -> Connection:
        state.own_checkout = True
        try:
            connection = engine.connect()
        finally:
            state.own_checkout = False
        try:
            self._transaction = connection.begin()
        except BaseException:  # cancelled or failed: the connection goes back, not to the GC
            connection.close()
            raise
        connection.info[SCOPE_KEY] = self
        return connection

    def _close(self, connection: Connection) -> None:
        """Roll back, close the session and, for the outermost scope, return the connection."""
        invalidated = connection.invalidated
        try:
            # The outer ROLLBACK discards the sessions' savepoints too: rolling it back first saves the
            # session a ROLLBACK TO SAVEPOINT round trip on close. A nested scope's savepoint must
            # outlive the session's own, so it is rolled back after the session closes.
            if self.parent is None:
                self._rollback(connection)
            if self.session is not None:
                self.session.sync_session.close()
            if self.parent is not None:
                self._rollback(connection)
        finally:
            if self.parent is None:
                connection.info.pop(SCOPE_KEY, None)
                invalidated = invalidated or connection.invalidated
                connection.close()
                if invalidated and connection.dialect.name == "sqlite":
                    # sqlite3 defers closing a connection while a statement of it is alive, and
                    # SQLAlchemy 2.0's aiosqlite adapter leaves a failed statement's cursor in the
                    # error's traceback: until the GC frees it, the file stays locked and the next
                    # test fails with "database is locked".
                    gc.collect()

    def _rollback(self, connection: Connection) -> None:
        if self._root()._commit_stopped:
            if self.parent is None and not connection.invalidated:
                # The stopped commit left SQLAlchemy without a transaction while the database still
                # has one: roll it back on the driver. Closing the connection instead would destroy
                # an in-memory database.
                connection.dialect.do_rollback(connection.connection)
            return
        if self._transaction is not None and self._transaction.is_active:
            self._transaction.rollback()

    def _root(self) -> RollbackScope:
        return self.parent._root() if self.parent else self

    def _innermost(self) -> RollbackScope:
        """The innermost active scope of this root: where connections opened now belong."""
        return self._nested[-1] if self._nested else self

    # -- guards: called for every statement on the scope's connection -------------------------------

    def _fail(self, error: IsolationError) -> None:
        """Record an isolation violation and raise ``error`` now; the scope's exit raises it again."""
        root = self._root()
        if root._violation is None:
            root._violation = error
        # SQLAlchemy's bookkeeping of the sessions that unwind after this warns about savepoints
        # that were ended out of order; the error below already explains that.
        warnings.filterwarnings("ignore", "nested transaction already deassociated", SAWarning)
        raise error

    def _stop_commit(self, error: IsolationError) -> None:
        """A commit of the outer transaction: refuse it (the scope's exit rolls back on the driver)."""
        self._root()._commit_stopped = True
        self._fail(error)

    def _check_statement(self, sent: str) -> bool:
        """Track the savepoints of the scope's connection and stop statements that would escape it.

        Returns True for a statement that must not reach the database (it has nothing left to do).
        """
        if self._orphans:
            self._recover()
        keyword_start = LEADING_NOISE.match(sent)
        statement = sent[keyword_start.end() if keyword_start else 0 :]
        savepoint = _SAVEPOINT_STATEMENT.match(statement)
        if savepoint is not None:
            verb, name = savepoint.group(1).split()[0].upper(), savepoint.group(2).strip('"')
            if verb == "SAVEPOINT":
                task = _current_task()
                self.savepoints.append(_Savepoint(name, task, caller()))
                if task is not None:
                    self._root()._tasks.add(task)
            elif self._lost_to_overlap(name):
                # After sessions overlapped, another task's rollback may have discarded this savepoint
                # already; ending it would replace the ConcurrentSessionError with "savepoint does not
                # exist". A rollback has nothing left to do (the scope's exit rolls everything back);
                # a release would report a commit that cannot happen, so it gets the error.
                if verb == "RELEASE":
                    self._check_not_broken()
                return True
            else:
                self._end_savepoint(name, "released" if verb == "RELEASE" else "rolled back")
            return False
        self._check_not_broken()
        if _DDL.match(statement):
            self._schema_changed()
        if _TRANSACTION_CONTROL.match(statement):
            self._fail(
                IsolationError(
                    f"Raw SQL {sent.strip()!r} at {caller()} would end the test's outer transaction and make "
                    "its writes permanent. harness stopped it; use session.commit() / session.rollback() (or "
                    "session.begin_nested()) so the test stays isolated."
                )
            )
        self._check_not_underneath_another_task(statement)
        return False

    def _recover(self) -> None:
        """Roll back to the savepoints of connections invalidated mid-transaction (a cancelled statement).

        On PostgreSQL a statement that failed or was cancelled aborts the transaction until a ROLLBACK
        TO; SQLAlchemy drops an invalidated connection without one, so the scope sends it.
        """
        assert self.connection is not None
        orphans, self._orphans = self._orphans, []
        cursor = self.connection.sync_connection.connection.cursor()  # type: ignore[union-attr]
        try:
            for name in reversed(orphans):
                names = [s.name for s in self.savepoints]
                if name in names:
                    cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    del self.savepoints[names.index(name) :]
        finally:
            cursor.close()

    def _forget_savepoints(self, names: set[str]) -> None:
        if names:
            self.savepoints[:] = [s for s in self.savepoints if s.name not in names]

    def _schema_changed(self) -> None:
        # What a commit checks (deferred constraints) is read from the schema: read it again, now
        # and once the scope has rolled the change back.
        root = self._root()
        root._ddl = True
        if root._state is not None:
            root._state.deferred = None

    def _check_not_broken(self) -> None:
        """After sessions overlapped, stop every further statement (the other task's too)."""
        violation = self._root()._violation
        if isinstance(violation, ConcurrentSessionError):
            raise ConcurrentSessionError(*violation.args)

    def _check_not_underneath_another_task(self, statement: str) -> None:
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
            root._fail(
                ConcurrentSessionError(
                    f"Two sessions used the test's connection at the same time: task {_task_name(task)!r} ran "
                    f"{' '.join(statement.split())[:80]!r} at {caller()} inside its savepoint {mine[-1].name} "
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

    def _end_savepoint(self, name: str, how: str) -> None:
        """Track a savepoint's end; overlapping sessions end one that is not the innermost."""
        root = self._root()
        names = [s.name for s in root.savepoints]
        if name not in names:
            return
        index = names.index(name)
        above = root.savepoints[index + 1 :]
        if above and not root._closing and root.active and root._violation is None:
            ended, still_open = root.savepoints[index], above[-1]
            root._fail(
                ConcurrentSessionError(
                    f"Two sessions used the test's connection in overlapping transactions: savepoint {name} "
                    f"(opened in task {_task_name(ended.task)!r} at {ended.where}) was {how} at {caller()} while savepoint "
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
        # next statement, which _check_not_broken refuses.
        current = _current_task()
        others = {task for task in self._tasks if task is not current and not task.done()}
        if others:
            await asyncio.wait(others, timeout=10)


def check_scope_engine(engine: AsyncEngine, trusted: bool) -> None:
    """Refuse an engine whose database is not a test database, or a SQLite engine without the fix."""
    if is_test_engine(engine):  # vetted, fixed and guarded by create_test_engine
        return
    check_test_database(engine.url, allow_remote=True)
    if not trusted and engine.dialect.name == "sqlite":
        msg = (
            "This SQLite engine was not made by harness.create_test_engine(): without harness's SQLite fix, rows "
            "committed in a rollback scope survive the rollback. Create the engine with create_test_engine()."
        )
        raise DatabaseConfigError(msg)


def refresh_on_every_query(session: AsyncSession) -> None:
    """Make every query of ``session`` refresh the objects it loads (``populate_existing=True``)."""
    event.listen(session.sync_session, "do_orm_execute", _populate_existing)


def _populate_existing(state: ORMExecuteState) -> None:
    # SQLAlchemy's recipe: every query refreshes the objects it loads, so what the app changed shows.
    if state.is_select:
        state.update_execution_options(populate_existing=True)


class _ScopeSession(Session):
    """The sync session behind a scope's AsyncSession; refuses work after the scope ended."""


_scope_session_classes: dict[type[Session], type[Session]] = {Session: _ScopeSession}


def _scope_session_class(base: type[Session]) -> type[Session]:
    """`_ScopeSession` with the app's own sync session class (a sessionmaker's sync_session_class)."""
    if base not in _scope_session_classes:
        _scope_session_classes[base] = type(f"Scope{base.__name__}", (_ScopeSession, base), {})
    return _scope_session_classes[base]


def engine_and_settings(
    bind: Any, sessionmaker: async_sessionmaker[Any] | None, session_options: dict[str, Any], made_by: str
) -> tuple[Any, dict[str, Any]]:
    """What a scope function was given, as (engine or session, session options). A sessionmaker,
    as ``bind`` or ``sessionmaker=``, gives its sessions' settings (``expire_on_commit``,
    ``autoflush``, ``info``, its session classes); options given outright win."""
    maker = bind if isinstance(bind, async_sessionmaker) else sessionmaker
    if maker is None:
        return bind, dict(session_options)
    if maker is bind and sessionmaker is not None:
        msg = f"{made_by}() got a sessionmaker twice: pass the engine first, then sessionmaker=..."
        raise TypeError(msg)
    if not isinstance(maker, async_sessionmaker):  # untyped callers
        msg = f"{made_by}(sessionmaker=...) takes an async_sessionmaker, got {type(maker).__name__}."  # type: ignore[unreachable]
        raise TypeError(msg)
    settings = {
        key: value for key, value in maker.kw.items() if key not in ("bind", "binds", "join_transaction_mode")
    }
    if maker.class_ is not AsyncSession:
        settings["class_"] = maker.class_
    if "info" in settings:  # each session gets its own copy, as the sessionmaker gives it
        settings["info"] = dict(settings["info"])
    if maker is bind:
        bind = maker.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            msg = (
                f"{made_by}() was given an async_sessionmaker that is not bound to an AsyncEngine. Pass the test "
                f"engine and the sessionmaker to copy its settings from: {made_by}(engine, sessionmaker=Session)."
            )
            raise ScopeError(msg)
    return bind, {**settings, **session_options}


@event.listens_for(_ScopeSession, "after_transaction_create")
def _check_scope_active(session: Session, transaction: SessionTransaction) -> None:
    scope = session.info.get(SCOPE_KEY)
    if scope is not None and not scope.active and transaction.parent is None and not scope._closing:
        msg = (
            "A session of a rollback scope was used after the scope ended. Use it only inside "
            "`async with rollback_scope(...)`; under pytest, do not keep db_session beyond its test."
        )
        raise ScopeError(msg)


def rollback_scope(
    bind: AsyncEngine | AsyncSession | async_sessionmaker[Any],
    *,
    sessionmaker: async_sessionmaker[Any] | None = None,
    **session_options: Any,
) -> RollbackScope:
    """Open a scope whose session's work is rolled back on exit, even if the code commits.

    With an `AsyncEngine`, the scope checks out one connection, begins the outer transaction and
    yields an `AsyncSession` joined to it with ``join_transaction_mode="create_savepoint"``: the
    session's ``commit()`` and ``rollback()`` act on savepoints, and on exit everything is rolled
    back and the connection returned. Connections that code opens from the engine meanwhile (and
    from the app's engines harness adopted) join the same transaction. With the session of an
    active scope, the new scope nests inside it in a savepoint: data made in the outer scope
    (shared by a class of tests) is seen by the inner one, whose own work is discarded on exit.

    ``session_options`` go to the `AsyncSession` (``expire_on_commit`` is False unless given),
    except ``populate_existing=True``: every query of the session then refreshes the objects it
    loads, so an object the test holds shows what the app's own sessions changed since.
    ``sessionmaker=`` (the app's `async_sessionmaker`) gives the scope's sessions its settings:
    ``expire_on_commit``, ``autoflush``, ``info``, its session classes; ``session_options`` still
    win. A sessionmaker bound to a test engine can be passed as ``bind`` itself.

    While a scope is active, harness stops code that would escape it: a commit of the outer
    transaction, raw ``COMMIT``/``ROLLBACK``/``BEGIN``, and sessions whose transactions overlap
    on the shared connection. Each raises an `IsolationError` where it happens, and again when
    the scope exits if the code swallowed it.

    Usage:

        async with rollback_scope(engine) as class_session:
            class_session.add(Campaign(name="shared"))
            await class_session.flush()
            async with rollback_scope(class_session) as session:
                ...  # sees the campaign; its own rows vanish at exit
    """
    target, options = engine_and_settings(bind, sessionmaker, session_options, "rollback_scope")
    return RollbackScope(target, options)
