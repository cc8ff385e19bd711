"""Pooled connections end with the event loop that opened them.

An asyncpg connection belongs to the event loop it was opened in: used from another loop it fails
with "attached to a different loop", and closed from another loop it logs tracebacks. Test runs
change loops all the time (a loop per test, per class, a private loop that builds the database,
`unittest.IsolatedAsyncioTestCase`), so harness ties the connections of its engines to their loop:

- when a loop shuts down (``asyncio.run``, ``asyncio.Runner``, pytest-asyncio: they call
  ``loop.shutdown_asyncgens()``), the engine's pool is disposed of inside it, while its connections
  can still be closed properly (unless a connection is checked out, by another loop's scope: the
  pool is kept, and the connections of this loop are dropped when next met);
- a pooled connection of another loop is never handed out: the pool opens a new one instead, and
  drops the old one without awaiting anything on its loop. A loop closed by hand without
  ``shutdown_asyncgens()`` leaves its connections to the garbage collector, which warns
  (``ResourceWarning``): close loops with ``asyncio.run()`` or ``asyncio.Runner``.

SQLite's aiosqlite connections (which run in threads of their own) and psycopg's (which ask for
the running loop at each wait) move between loops freely, and stay pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.base import OptionEngineMixin
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.util import greenlet_spawn

from harness.db.drivers import terminate

__all__ = ["drop", "opened_in_another_loop", "tie_to_loops"]

# The loop each live driver connection (asyncpg's, under SQLAlchemy's adapter) was opened in.
_loop_of: WeakKeyDictionary[Any, weakref.ref[asyncio.AbstractEventLoop]] = WeakKeyDictionary()
# Per running loop, per engine: the async generator whose closing (at the loop's shutdown) disposes
# of the pool. An entry goes when its loop shuts down or is found closed: a generator refers to its
# loop (its finalizer hook), so an entry would otherwise keep its loop alive for good.
_at_loop_end: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, AsyncGenerator[None, None]]] = (
    WeakKeyDictionary()
)


def tie_to_loops(engine: Engine) -> None:
    """Dispose of ``engine``'s pool when a loop it connected in shuts down; never hand out a
    connection of another loop. `prepare` calls it once per dialect: the engines that share a pool
    (``execution_options()``, adopted app engines) share its listeners. aiosqlite's and psycopg's
    connections are not bound to a loop (they ask for the running one at each wait): they stay
    pooled from loop to loop, and only their asyncio locks are renewed (`_unbind_locks`)."""
    while isinstance(engine, OptionEngineMixin):  # the engine that owns the pool
        engine = engine._proxied
    if engine.dialect.driver in ("aiosqlite", "psycopg"):
        event.listen(engine.pool, "checkin", _unbind_locks)
        return
    engine_ref = weakref.ref(engine)

    def opened(dbapi_connection: Any, _record: Any) -> None:
        _opened(dbapi_connection, engine_ref)

    event.listen(engine.pool, "connect", opened)  # kept by the pools that dispose() makes
    event.listen(engine.pool, "checkout", _handed_out)


def opened_in_another_loop(dbapi_connection: Any) -> bool:
    """Whether ``dbapi_connection`` was opened in an event loop other than the running one."""
    opened_in = _loop_of.get(_driver(dbapi_connection))
    if opened_in is None:
        return False
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    return opened_in() is not running


def drop(dbapi_connection: Any) -> None:
    """Let go of a connection of another loop without awaiting on that loop: abort its socket if
    the loop is still open (the server ends its session), else leave it to the garbage collector."""
    driver = _driver(dbapi_connection)
    opened_in = _loop_of.pop(driver, None)
    loop = opened_in() if opened_in is not None else None
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # it closed meanwhile
            if loop.is_running():  # in another thread
                loop.call_soon_threadsafe(terminate, driver)
            else:
                terminate(driver)


def _opened(dbapi_connection: Any, engine_ref: weakref.ref[Engine]) -> None:
    loop = asyncio.get_running_loop()
    _loop_of[_driver(dbapi_connection)] = weakref.ref(loop)
    if getattr(loop, "_asyncgens_shutdown_called", False):  # too late to hear of its end
        return
    for ended in [other for other in _at_loop_end if other.is_closed()]:  # closed by hand
        del _at_loop_end[ended]
    closers = _at_loop_end.setdefault(loop, {})
    if engine_ref() is None or id(engine_ref) in closers:
        return
    closer = _dispose_at_end(engine_ref, weakref.ref(loop))
    closers[id(engine_ref)] = closer
    # Iterating it once registers it with the loop, which closes it in shutdown_asyncgens().
    with contextlib.suppress(StopIteration):
        closer.__anext__().send(None)


def _unbind_locks(dbapi_connection: Any, _record: Any) -> None:
    # An asyncio.Lock binds itself to the loop of the first task that had to wait for it (sessions
    # overlapping, say): in the next loop, a waiter would fail with "bound to a different event
    # loop". SQLAlchemy's adapter guards each connection with one, and psycopg too; fresh locks
    # at check-in, when nobody holds them, unbind them.
    if dbapi_connection is None:
        return
    if hasattr(dbapi_connection, "_execute_mutex"):
        dbapi_connection._execute_mutex = asyncio.Lock()
    driver = _driver(dbapi_connection)
    if isinstance(getattr(driver, "lock", None), asyncio.Lock):  # psycopg's
        driver.lock = asyncio.Lock()


def _driver(dbapi_connection: Any) -> Any:
    return getattr(dbapi_connection, "driver_connection", dbapi_connection)


def _handed_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    if opened_in_another_loop(dbapi_connection):
        # The pool invalidates it (harness's pool drops it unawaited) and connects anew.
        msg = "connection opened in another event loop"
        raise DisconnectionError(msg)


async def _dispose_at_end(
    engine_ref: weakref.ref[Engine], loop_ref: weakref.ref[asyncio.AbstractEventLoop]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if (loop := loop_ref()) is not None:
            _at_loop_end.pop(loop, None)
        engine = engine_ref()
        # A connection still checked out (another loop's scope) would be orphaned by a new pool.
        if engine is not None and not getattr(engine.pool, "checkedout", lambda: 0)():
            await greenlet_spawn(engine.dispose)
