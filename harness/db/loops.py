"""Pooled connections end with the event loop that opened them.

An asyncpg connection belongs to the event loop it was opened in: used from another loop it fails
with "attached to a different loop", and closed from another loop it logs tracebacks. Test runs
change loops all the time (a loop per test, per class, a private loop that builds the database,
`unittest.IsolatedAsyncioTestCase`), so harness ties the connections of its engines to their loop:

- when a loop shuts down (``asyncio.run``, ``asyncio.Runner``, pytest-asyncio), the engine's pool
  is disposed of inside it, while its connections can still be closed properly;
- a pooled connection of a loop that ended without shutting down (a hand-closed loop) is not
  handed out in another loop: the pool opens a new one instead, and drops the old one without
  awaiting anything on its dead loop.

SQLite's aiosqlite connections run in threads of their own and move between loops freely.
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
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.util import greenlet_spawn

__all__ = ["drop", "foreign", "tie_to_loops"]

# The loop each live driver connection (asyncpg's, under SQLAlchemy's adapter) was opened in.
_loop_of: WeakKeyDictionary[Any, weakref.ref[asyncio.AbstractEventLoop]] = WeakKeyDictionary()
# Per loop, per engine: the async generator whose closing (at the loop's shutdown) disposes of the pool.
_at_loop_end: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, AsyncGenerator[None, None]]] = (
    WeakKeyDictionary()
)


def tie_to_loops(engine: Engine) -> None:
    """Dispose of ``engine``'s pool when a loop it connected in shuts down; never reuse a connection
    of another loop. Once per engine (`prepare` calls it once per dialect: engines that share a pool
    share its listeners). Nothing to do for aiosqlite, whose connections are not bound to a loop."""
    if engine.dialect.driver == "aiosqlite":
        return
    engine_ref = weakref.ref(engine)

    def opened(dbapi_connection: Any, _record: Any) -> None:
        _opened(dbapi_connection, engine_ref)

    event.listen(engine.pool, "connect", opened)  # kept by the pools that dispose() makes
    event.listen(engine.pool, "checkout", _handed_out)


def foreign(dbapi_connection: Any) -> bool:
    """Whether ``dbapi_connection`` was opened in an event loop other than the running one."""
    opened_in = _loop_of.get(_driver(dbapi_connection))
    loop = opened_in() if opened_in is not None else None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    return opened_in is not None and loop is not running


def drop(dbapi_connection: Any) -> None:
    """Let go of a connection of another loop without awaiting on that loop: abort its socket if
    the loop is still open (the server ends its session), else leave it to the garbage collector."""
    opened_in = _loop_of.pop(_driver(dbapi_connection), None)
    loop = opened_in() if opened_in is not None else None
    terminate = getattr(_driver(dbapi_connection), "terminate", None)
    if loop is not None and not loop.is_closed() and terminate is not None:
        with contextlib.suppress(Exception):
            if loop.is_running():  # in another thread
                loop.call_soon_threadsafe(terminate)
            else:
                terminate()


def _opened(dbapi_connection: Any, engine_ref: weakref.ref[Engine]) -> None:
    loop = asyncio.get_running_loop()
    _loop_of[_driver(dbapi_connection)] = weakref.ref(loop)
    ends = _at_loop_end.setdefault(loop, {})
    if engine_ref() is None or id(engine_ref) in ends:
        return
    closer = _dispose_at_end(engine_ref)
    ends[id(engine_ref)] = closer
    # Iterating it once registers it with the loop, which closes it in shutdown_asyncgens().
    with contextlib.suppress(StopIteration):
        closer.__anext__().send(None)


def _driver(dbapi_connection: Any) -> Any:
    return getattr(dbapi_connection, "driver_connection", dbapi_connection)


def _handed_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    if foreign(dbapi_connection):
        # The pool invalidates it (harness's pool drops it unawaited) and connects anew.
        msg = "connection opened in another event loop"
        raise DisconnectionError(msg)


async def _dispose_at_end(engine_ref: weakref.ref[Engine]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        engine = engine_ref()
        if engine is not None:
            await greenlet_spawn(engine.dispose)
