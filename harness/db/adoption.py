"""The app's own engines and sessionmakers, pointed at the test database and joined to its scopes.

pytest-django's model, for SQLAlchemy: the test runner owns the database settings, so whatever the
code under test opens goes to the test database and into the test's transaction. `adopt_engines`
does it for the app's ``AsyncEngine`` objects (the ones its modules built at import time), in
place: every sessionmaker, dependency, lifespan and direct ``engine.begin()`` of the app then runs
unchanged, as in production, and its writes vanish with the test. `bind_sessions` does the same for
one ``async_sessionmaker`` at a time.

An adopted engine's connections are:

- inside a rollback scope of the test engine, joined to it (`harness.db.joining`);
- inside a commit scope, real connections to the test database;
- outside any scope, refused with a `ScopeError`: its writes would outlive the test.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.base import OptionEngine, OptionEngineMixin
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import immutabledict

from harness._versions import release
from harness._where import caller
from harness.db.commits import CommitScope
from harness.db.engines import is_test_engine, prepare, state_of
from harness.db.joining import join
from harness.db.scopes import RollbackScope, check_scope_engine, scope_of
from harness.exceptions import DatabaseConfigError, ScopeError

__all__ = ["EngineAdoption", "adopt_engines", "bind_sessions", "resolve_engine"]


class _AdoptedEngine(OptionEngineMixin, Engine):
    """The engine an adopted ``AsyncEngine`` wraps: the test engine's dialect, URL, pool and events.

    Built like ``engine.execution_options()`` builds its engines, with the app engine's execution
    options. ``dispose()`` does nothing: an app's shutdown disposing of its engine must not close
    the test engine's connections, nor an in-memory database with them.
    """

    def __init__(self, test_engine: Engine, name: str, execution_options: dict[str, Any]) -> None:
        super().__init__(test_engine, execution_options)
        self.adopted_name = name

    def update_execution_options(self, **opt: Any) -> None:
        Engine.update_execution_options(self, **opt)

    def raw_connection(self) -> PoolProxiedConnection:
        state = state_of(self)
        if state.own_checkout:  # a scope opening its own connection: rollback_scope(app's sessionmaker)
            return self.pool.connect()
        if state.scopes:
            return join(state)
        if state.commit_scopes:
            return self.pool.connect()
        msg = (
            f"{self.adopted_name} (adopted by harness: it works on the test database) was used at {caller()} "
            "with no database scope open, so its writes would stay in the test database for later tests. Give the "
            "test a scope: ask for db_session (or app_client), or subclass harness.IntegrationTest; for real "
            "commits use harness.RealCommitsTest or harness.commit_scope()."
        )
        raise ScopeError(msg)

    def dispose(self, close: bool = True) -> None:
        """Nothing to dispose of: the connections are the test engine's."""


# SQLAlchemy < 2.0.38 cannot listen on an engine derived from a derived one (an adopted engine is
# derived from the test engine), and connection options such as isolation_level set one listener.
_NESTED_OPTIONS_LISTEN = release(sqlalchemy.__version__) >= (2, 0, 38)


class _AdoptedOptions(OptionEngine):
    """``adopted.execution_options(...)``: an engine with more options and the adopted engine's rules."""

    _characteristics: Mapping[str, Any] = immutabledict()

    def update_execution_options(self, **opt: Any) -> None:
        if _NESTED_OPTIONS_LISTEN:
            super().update_execution_options(**opt)
            return
        # What SQLAlchemy's own code does, but with the connection options applied in connect().
        self.dispatch.set_engine_execution_options(self, opt)
        self._execution_options = self._execution_options.union(opt)
        names = set(self.dialect.connection_characteristics).intersection(opt)  # type: ignore[attr-defined]
        self._characteristics = immutabledict(
            {**getattr(self._proxied, "_characteristics", {}), **{name: opt[name] for name in names}}
        )

    def connect(self) -> Connection:
        connection = super().connect()
        if self._characteristics:
            self.dialect._set_connection_characteristics(connection, self._characteristics)  # type: ignore[attr-defined]
        return connection

    def raw_connection(self) -> PoolProxiedConnection:
        return self._proxied.raw_connection()

    def dispose(self, close: bool = True) -> None:
        """Nothing to dispose of: the connections are the test engine's."""


_AdoptedEngine._option_cls = _AdoptedOptions
_AdoptedOptions._option_cls = _AdoptedOptions


def _check_test_engine(test_engine: AsyncEngine) -> None:
    if not isinstance(test_engine, AsyncEngine):  # untyped callers
        msg = (  # type: ignore[unreachable]
            f"The test engine must be an AsyncEngine harness made (harness.create_test_engine(), "
            f"TestDatabase.engine, or the db_engine fixture), got {test_engine!r}."
        )
        raise DatabaseConfigError(msg)
    if not is_test_engine(test_engine):
        check_scope_engine(test_engine, trusted=False)


def _joined(test_engine: AsyncEngine, name: str, execution_options: dict[str, Any]) -> _AdoptedEngine:
    _check_test_engine(test_engine)
    prepare(test_engine.sync_engine)
    return _AdoptedEngine(test_engine.sync_engine, name, execution_options)


def resolve_engine(path: str) -> AsyncEngine:
    """The ``AsyncEngine`` at ``path``: ``"package.module:attribute"`` (or ``"package.module.attribute"``).

    Usage:

        engine = resolve_engine("app.db:engine")
    """
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attribute:
        msg = f"{path!r} does not name an engine: write 'package.module:attribute', e.g. 'app.db:engine'."
        raise DatabaseConfigError(msg)
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as error:
        msg = f"Cannot import {module_name!r} to find the engine {path!r}: {error}."
        raise DatabaseConfigError(msg) from error
    for part in attribute.split("."):
        if not hasattr(value, part):
            msg = f"{module_name!r} has no attribute {attribute!r}, so there is no engine at {path!r}."
            raise DatabaseConfigError(msg)
        value = getattr(value, part)
    if not isinstance(value, AsyncEngine):
        msg = (
            f"{path!r} is {type(value).__name__}, not an AsyncEngine: harness adopts the app's async engines."
        )
        raise DatabaseConfigError(msg)
    return value


_adopted: WeakKeyDictionary[AsyncEngine, tuple[Engine, AsyncEngine]] = WeakKeyDictionary()


class EngineAdoption:
    """A context manager that points the app's engines at a test engine; made by `adopt_engines`.

    ``engines`` are the adopted `AsyncEngine` objects (resolved from their paths).
    """

    def __init__(self, engines: Iterable[AsyncEngine | str], test_engine: AsyncEngine) -> None:
        _check_test_engine(test_engine)
        self.test_engine = test_engine
        self.engines: list[AsyncEngine] = []
        self._names: dict[AsyncEngine, str] = {}
        for item in engines:
            engine = resolve_engine(item) if isinstance(item, str) else item
            if not isinstance(engine, AsyncEngine):  # untyped callers
                msg = f"adopt_engines() takes the app's AsyncEngine objects or 'module:attribute' paths to them, got {item!r}."  # type: ignore[unreachable]
                raise TypeError(msg)
            self.engines.append(engine)
            self._names[engine] = (
                f"The app's engine {item!r}"
                if isinstance(item, str)
                else f"The app's engine {_describe(engine)}"
            )
        self._swapped: list[tuple[AsyncEngine, Engine]] = []

    def __enter__(self) -> EngineAdoption:
        try:
            for engine in self.engines:
                self._adopt(engine)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._restore()

    def _adopt(self, engine: AsyncEngine) -> None:
        if engine is self.test_engine or engine.sync_engine is self.test_engine.sync_engine:
            return  # the test engine itself: its connections join scopes already
        adopted = _adopted.get(engine)
        if adopted is not None:
            if adopted[1] is not self.test_engine:
                msg = f"{self._names[engine]} is already adopted by another test engine ({adopted[1]!r})."
                raise ScopeError(msg)
            return  # adopted by an enclosing adoption: it restores the engine
        original = engine.sync_engine
        joined = _joined(self.test_engine, self._names[engine], dict(original.get_execution_options()))
        engine.sync_engine = engine._assign_proxied(joined)
        _adopted[engine] = (original, self.test_engine)
        self._swapped.append((engine, original))

    def _restore(self) -> None:
        while self._swapped:
            engine, original = self._swapped.pop()
            engine.sync_engine = engine._assign_proxied(original)
            _adopted.pop(engine, None)


def _describe(engine: AsyncEngine) -> str:
    adopted = _adopted.get(engine)
    url = adopted[0].url if adopted is not None else engine.url  # its own URL, not the test database's
    return f"on {url.render_as_string(hide_password=True)!r}"


def adopt_engines(*engines: AsyncEngine | str, test_engine: AsyncEngine) -> EngineAdoption:
    """Point the app's engines at ``test_engine`` while the block runs; restore them after.

    Each engine (an `AsyncEngine`, or the path of the module attribute holding it,
    ``"app.db:engine"``) is changed in place, so every reference the app holds to it (its
    sessionmakers, dependencies, lifespan, services) now reaches the test database: inside a
    rollback scope its connections join the test's transaction (its ``commit()`` releases a
    savepoint), inside a commit scope they commit for real, and outside any scope they are refused.
    ``engine.dispose()`` does nothing meanwhile. The app's own database is never connected to.

    Usage:

        with adopt_engines("app.db:engine", test_engine=database.engine):
            async with rollback_scope(database.engine) as session:
                await create_campaign(name="January")  # commits through the app's sessionmaker
                assert await session.scalar(select(func.count(Campaign.id))) == 1
            # ... and the campaign is gone
    """
    return EngineAdoption(engines, test_engine)


def scope_engine(session: AsyncSession) -> AsyncEngine:
    """The test engine of ``session``'s active scope (rollback or commit)."""
    scope = scope_of(session)
    if isinstance(scope, CommitScope):
        return scope.engine
    assert isinstance(scope, RollbackScope)
    root = scope._root()
    assert isinstance(root.bind, AsyncEngine)
    return root.bind


DEPENDENCY_REFUSED = (
    "harness no longer replaces dependencies such as {names}: the replacement dropped what the dependency "
    "does after `yield` (a commit, say), so the app's writes were silently rolled back. Adopt the engine the "
    "dependency uses instead (harness_engines = app.db:engine in the pytest configuration, or "
    "harness.adopt_engines()), or bind its async_sessionmaker; the dependency then runs unchanged."
)


class _SharedSession(AsyncSession):
    """The test's own session, handed to the app by a sessionmaker bound with ``share=True``.

    It is the test's session (one identity map, one transaction) under another object: closing it
    does nothing, and ``begin()`` inside the test's transaction opens a savepoint.
    """

    def __init__(self, test_session: AsyncSession) -> None:
        # The test session's state, sync session included; copied whole, as SQLAlchemy releases name it differently.
        vars(self).update(vars(test_session))

    def begin(self) -> Any:
        return self.begin_nested() if self.in_transaction() else super().begin()

    async def close(self) -> None:
        """Nothing to close: the session is the test's."""

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        return None


@contextlib.contextmanager
def bind_sessions(
    session: AsyncSession,
    *sessionmakers: async_sessionmaker[Any],
    dependencies: Iterable[Callable[..., Any]] = (),
    share: bool = False,
) -> Iterator[None]:
    """Point the app's ``async_sessionmaker``s at the test database of ``session``'s scope; restore them on exit.

    Each sessionmaker then makes sessions on the test engine, as if its engine were adopted (see
    `adopt_engines`): inside a rollback scope their ``commit()`` releases a savepoint of the test's
    transaction, so what the app writes is visible to ``session`` and gone after the scope; with the
    session of a `commit_scope`, they commit for real. Adopting the app's engine covers every
    sessionmaker and direct use of it at once; bind a sessionmaker when the app builds it without one.
    ``dependencies`` is refused: see the error.

    With ``share=True`` the sessionmakers hand the app ``session`` itself instead (under another
    object whose ``close()`` does nothing): the app and the test see the same objects, so nothing
    the test holds is stale after a request, at the price of production's separation between the
    two. Objects the app commits stay attached to the test's session.

    Usage:

        async with rollback_scope(engine) as session:
            with bind_sessions(session, app_sessionmaker):
                await service.run()
    """
    dependencies = list(dependencies)
    if dependencies:
        names = ", ".join(getattr(d, "__qualname__", repr(d)) for d in dependencies)
        raise TypeError(DEPENDENCY_REFUSED.format(names=names))
    for maker in sessionmakers:
        if not isinstance(maker, async_sessionmaker):  # untyped callers
            msg = f"bind_sessions() binds async_sessionmaker objects, got {type(maker).__name__}. Pass the app's async_sessionmaker(...)."  # type: ignore[unreachable]
            raise TypeError(msg)
    test_engine = scope_engine(session)
    saved = [(maker, dict(maker.kw), maker.class_) for maker in sessionmakers]
    for maker in sessionmakers:
        if share:
            maker.class_ = lambda **_: _SharedSession(session)  # type: ignore[assignment]
            continue
        joined = _joined(test_engine, f"An async_sessionmaker bound by harness ({maker!r})", {})
        maker.configure(bind=AsyncEngine(joined))
    try:
        yield
    finally:
        for maker, kw, class_ in saved:
            maker.kw.clear()
            maker.kw.update(kw)
            maker.class_ = class_
