"""Connections that join the test's transaction: what code gets from a test engine inside a scope.

While a rollback scope is active, every connection that code checks out from the test engine (or
from an engine harness adopted) is a `JoinedConnection`: the scope's own DBAPI connection, on which
each transaction is a savepoint. It begins at the first statement, as a DBAPI transaction does;
``commit()`` releases it and ``rollback()`` rolls back to it, so SQLAlchemy's ``Connection``,
``Session`` and their events work unchanged on top, as ``join_transaction_mode="create_savepoint"``
does for one session. Closing it never closes the scope's connection.

At each commit it also checks what the database would check at a real COMMIT: deferred
constraints (PostgreSQL) and deferred foreign keys (SQLite). A failed check rolls the savepoint
back and raises the driver's IntegrityError, as a failed COMMIT does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.pool import PoolProxiedConnection

from harness._where import caller
from harness.exceptions import IsolationError, ScopeError

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["DeferredChecks", "JoinedConnection", "join"]

_serials = itertools.count(1)


@dataclass(frozen=True)
class DeferredChecks:
    """What a real COMMIT on this database checks that a savepoint release does not.

    ``constraints``: PostgreSQL has deferrable constraints, checked with SET CONSTRAINTS ALL
    IMMEDIATE; ``initially_deferred`` are then set back to DEFERRED, as a new transaction starts.
    ``tables``: SQLite tables with DEFERRABLE INITIALLY DEFERRED foreign keys.
    """

    constraints: bool = False
    initially_deferred: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()


def join(state: Any) -> JoinedConnection:
    """A joined connection on the innermost active rollback scope of ``state`` (a test engine's)."""
    root = state.scopes[-1]
    owner = root._innermost()
    if not owner.accepts_connections:
        msg = (
            f"A database connection was opened at {caller()} between the tests of a class whose data lives in a "
            "rollback scope: what it wrote would become part of the class's data for the tests that follow. "
            "Open connections inside a test (or in setup_class_data), and stop background work at the end of "
            "each test."
        )
        raise ScopeError(msg)
    return JoinedConnection(root, owner, state)


class JoinedConnection(PoolProxiedConnection):
    """The scope's DBAPI connection as a connection of its own, whose transactions are savepoints.

    Made by the test engine's pool (and by adopted engines) while a rollback scope is active; see
    the module docstring. ``scope`` is the outermost rollback scope, whose connection it shares and
    which tracks its savepoints; ``owner`` the innermost one when it was made (a test's, nested in
    a class's), whose end ends it. ``wrote`` is where it first wrote, if it did.
    """

    def __init__(self, scope: Any, owner: Any, state: Any) -> None:
        self.scope, self.owner = scope, owner
        self._state = state
        self._fairy: PoolProxiedConnection = scope.connection.sync_connection.connection
        self._dialect: Dialect = scope.connection.dialect
        self._savepoint: str | None = None
        self._commits_at_open = 0
        self._valid = True
        self._closed = False
        self._names: dict[str, str] = {}
        self.wrote: str | None = None
        self.serial = next(_serials)
        owner._joined.append(self)

    def __repr__(self) -> str:
        return f"<JoinedConnection {self.serial} of {self._fairy!r}>"

    # -- the PoolProxiedConnection interface ------------------------------------------------------

    @property
    def dbapi_connection(self) -> Any:  # type: ignore[override]
        return self._fairy.dbapi_connection

    @property
    def driver_connection(self) -> Any:  # type: ignore[override]
        return self._fairy.driver_connection

    @property
    def info(self) -> dict[str, Any]:
        return self._fairy.info  # the scope's: statement guards find the scope here

    @property
    def record_info(self) -> dict[str, Any] | None:
        return self._fairy.record_info

    @property
    def _connection_record(self) -> ConnectionPoolEntry | None:
        return getattr(self._fairy, "_connection_record", None)

    @property
    def is_valid(self) -> bool:
        return self._valid and self._fairy.is_valid

    @property
    def is_detached(self) -> bool:
        return False

    def detach(self) -> None:
        """Nothing to detach: the connection stays the scope's."""

    def invalidate(self, e: BaseException | None = None, soft: bool = False) -> None:
        # Only this view ends: the scope's connection, and an in-memory database with it, stays. Its
        # open transaction (a statement cancelled mid-way, say) is rolled back before the scope's next
        # statement, which would otherwise run in an aborted transaction.
        self._valid = False
        if self._savepoint is not None and self.owner.active:
            self.scope._orphans.append(self._savepoint)
            self._forget_nested()
        self._savepoint = None

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        self._check_scope_active()
        if self._savepoint is None:
            # Named by depth, not by connection: a name that recurs is a statement asyncpg has
            # prepared already (a new name per connection would cost a round trip to prepare).
            name = f"harness_joined_{len(self.scope.savepoints) + 1}"
            self._execute(f"SAVEPOINT {name}")
            self._savepoint, self._commits_at_open = name, self.scope._joined_commits
        return self._fairy.cursor(*args, **kwargs)

    def commit(self) -> None:
        if self._savepoint is None:
            return
        self._check_scope_active()
        try:
            self._check_deferred()
        except BaseException:
            self.rollback()  # as a failed COMMIT ends the transaction
            raise
        name, self._savepoint = self._savepoint, None
        self._forget_nested()
        self._execute(f"RELEASE SAVEPOINT {name}")
        self.scope._joined_commits += 1
        self.wrote = None

    def rollback(self) -> None:
        name, self._savepoint = self._savepoint, None
        if name is None or not self.owner.active:
            return  # nothing open, or the scope's own rollback undid it all
        self._forget_nested()
        if self.scope._joined_commits == self._commits_at_open:
            self._execute(f"ROLLBACK TO SAVEPOINT {name}")
        elif self.wrote is None:
            # Another connection committed inside this transaction, which wrote nothing itself: in
            # production the other commit stands, so this one ends without undoing it.
            self._execute(f"RELEASE SAVEPOINT {name}")
        else:
            self.scope._fail(
                IsolationError(
                    f"A transaction that wrote at {self.wrote} rolled back after another connection committed "
                    "inside it. In production they are separate transactions and the other commit would stand; "
                    "in the test's one transaction the rollback would take it too. harness stopped it: end the "
                    "first transaction (commit or roll back) before the other one begins, or test this with "
                    "real commits (harness.RealCommitsTest)."
                )
            )
        self.wrote = None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._valid and self._fairy.is_valid:
                self.rollback()

    def _close_special(self, transaction_reset: bool = False) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fairy, name)

    def _check_scope_active(self) -> None:
        if not self.owner.active:
            msg = (
                "A database connection of a test was used after the test's rollback scope ended (a session, "
                "connection or background task kept beyond the test). Its statements would run outside the "
                "test's transaction: harness refused them. Close sessions and await tasks before the test ends."
            )
            raise ScopeError(msg)

    def _forget_nested(self) -> None:
        # Its own nested savepoints end with it (SQLAlchemy does not always roll back to them first).
        self.scope._forget_savepoints(set(self._names.values()))

    # -- savepoints -------------------------------------------------------------------------------

    def savepoint_name(self, name: str) -> str:
        """A savepoint name of SQLAlchemy's (sa_savepoint_1) made unique among the open ones.

        Every Connection numbers its savepoints from 1, so two on one DBAPI connection would reuse
        names, and the scope's tracking tells savepoints apart by name. The depth at which it opens
        makes it unique while it is open, and recurs from test to test (see `cursor`).
        """
        unique = self._names.get(name)
        if unique is None:
            unique = self._names[name] = f"{name}_j{len(self.scope.savepoints) + 1}"
        return unique

    def _execute(self, statement: str) -> None:
        if self.scope._check_statement(statement):
            return  # the scope knows it has nothing left to do (a savepoint lost to overlap)
        cursor = self._fairy.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()

    def _query(self, statement: str) -> list[tuple[Any, ...]]:
        cursor = self._fairy.cursor()
        try:
            cursor.execute(statement)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    # -- what a real COMMIT checks ------------------------------------------------------------------

    def _check_deferred(self) -> None:
        checks: DeferredChecks | None = self._state.deferred
        if checks is None:
            checks = self._state.deferred = self._read_deferred()
        if checks.constraints:
            self._execute("SET CONSTRAINTS ALL IMMEDIATE")  # checks what is pending, now
            if checks.initially_deferred:
                self._execute(f"SET CONSTRAINTS {', '.join(checks.initially_deferred)} DEFERRED")
        for table in checks.tables:
            violations = self._query(f'PRAGMA foreign_key_check("{table}")')
            if violations:
                row = violations[0]
                msg = (
                    f"FOREIGN KEY constraint failed: {len(violations)} row(s) of {table} refer to rows of "
                    f"{row[2]} that do not exist (first: rowid {row[1]}). harness checked the deferred foreign "
                    "keys at this commit, as SQLite checks them at COMMIT."
                )
                raise self._dialect.loaded_dbapi.IntegrityError(msg)

    def _read_deferred(self) -> DeferredChecks:
        if self._dialect.name == "postgresql":
            rows = self._query(
                "SELECT c.condeferred, quote_ident(n.nspname) || '.' || quote_ident(c.conname) "
                "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.condeferrable"
            )
            return DeferredChecks(
                constraints=bool(rows),
                initially_deferred=tuple(sorted(name for deferred, name in rows if deferred)),
            )
        if self._dialect.name == "sqlite":
            rows = self._query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%INITIALLY DEFERRED%'"
            )
            return DeferredChecks(tables=tuple(sorted(name for (name,) in rows)))
        return DeferredChecks()
