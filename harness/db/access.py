"""Keep tests off databases harness did not create: "Database access not allowed", for SQLAlchemy.

    with block_databases() as guard:
        async with create_async_engine("postgresql+asyncpg://app@db/app").connect():   # DatabaseBlockedError
            ...

While a guard is on, a connection from any SQLAlchemy engine in the process is refused unless the
engine is harness's (a test engine, an engine harness adopted, harness's admin connections), the
database is an in-memory SQLite one (nothing outlives it), or the guard allows it. The refusal
comes before the driver connects, so a SQLite file is not even created, and names the database,
where its engine was created, and the fix. Engines on harness's own test database that harness
did not adopt are refused too: their connections would not join the test's transaction.

Creation sites are known for engines created while a guard is on, or after the pytest plugin
loaded (it starts recording before conftest.py files are imported).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import Pool

from harness._guards import GuardStack
from harness._where import caller
from harness.db.engines import TIMEOUT_NOTES, is_trusted, test_database_urls
from harness.db.urls import database_key, is_memory, safe_url
from harness.exceptions import DatabaseBlockedError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["DatabaseGuard", "block_databases"]

_recording = threading.Lock()
_sites: WeakKeyDictionary[Dialect, tuple[URL, str]] = WeakKeyDictionary()
_original_engine_created: Any = None


# -- where engines were created --------------------------------------------------------------------


def record_engine_sites() -> None:
    """Remember, for every engine created from now on, its URL and the line that created it."""
    global _original_engine_created
    with _recording:
        if _original_engine_created is not None:
            return
        _original_engine_created = Dialect.__dict__["engine_created"]

        def engine_created(cls: type[Dialect], engine: Engine) -> None:
            _sites[engine.dialect] = (engine.url, caller())
            _original_engine_created.__func__(cls, engine)

        Dialect.engine_created = classmethod(engine_created)  # type: ignore[method-assign,assignment]


def stop_recording_engine_sites() -> None:
    """Undo `record_engine_sites` (the sites already recorded are kept)."""
    global _original_engine_created
    with _recording:
        if _original_engine_created is not None:
            Dialect.engine_created = _original_engine_created  # type: ignore[method-assign]
            _original_engine_created = None


# -- the guard -------------------------------------------------------------------------------------


class DatabaseGuard:
    """Refuses connections to databases harness did not create while it is on; see `block_databases`.

    Guards nest: an inner guard adds its ``allow`` entries to the outer ones'. A refused connection
    is recorded in the innermost guard's ``blocked`` list, for code that swallows the error.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        if isinstance(allow, str | bytes):
            msg = f"allow takes a list of databases, got the string {allow!r}: write allow=[{allow!r}]."
            raise TypeError(msg)
        self.allow: tuple[str, ...] = tuple(allow)
        self.blocked: list[str] = []

    def __repr__(self) -> str:
        return f"<DatabaseGuard allow={list(self.allow)!r} blocked={len(self.blocked)}>"

    def assert_nothing_blocked(self) -> None:
        """Raise `DatabaseBlockedError` listing the databases this guard refused, if any.

        Code under test that catches `Exception` hides the refusal; this brings it back.
        """
        __tracebackhide__ = True
        if not self.blocked:
            return
        bullets = "\n".join(f"- {url}" for url in dict.fromkeys(self.blocked))
        msg = (
            "harness refused connections to databases it did not create, which the code under test may have "
            f"hidden with `except Exception`:\n{bullets}\n\n{_FIX}"
        )
        raise DatabaseBlockedError(msg)

    def __enter__(self) -> Self:
        record_engine_sites()
        _guards.push(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _guards.pop(self)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def block_databases(*, allow: Iterable[str] = ()) -> DatabaseGuard:
    """A guard that refuses connections to databases harness did not create while it is on.

    Use it with `with` or `async with`. ``allow`` names databases the code may reach anyway: a
    database URL (its password and driver do not matter), a database name, or a SQLite file's name.
    The pytest plugin runs every test behind one (``harness_block_databases``), and
    ``@pytest.mark.allow_database(...)`` adds entries for a test.

    Usage:

        with block_databases(allow=["reporting"]):
            await sync_reports()   # may reach the database named reporting, and no other
    """
    return DatabaseGuard(allow)


_FIX = (
    "- If this is the app's engine, adopt it: harness_engines = app.db:engine in the pytest configuration "
    "(or harness.adopt_engines()); its connections then go to the test database and into the test's transaction.\n"
    "- If the test really needs this database, mark it @pytest.mark.allow_database(<its URL or name>)."
)


def _check_connect(dialect: Dialect, _record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
    _check(dialect, lambda: _url_from_arguments(dialect, cargs, cparams))


def _check_checkout(_dbapi_connection: Any, _record: Any, proxy: Any) -> None:
    pool = getattr(proxy, "_pool", None)
    dialect = getattr(pool, "_dialect", None)
    if dialect is not None:
        _check(dialect, lambda: _url_of_engine(dialect))


def _url_of_engine(dialect: Dialect) -> URL | None:
    # An engine created before its site was recorded: find it among the live objects (refusals are rare).
    return next((o.url for o in gc.get_objects() if isinstance(o, Engine) and o.dialect is dialect), None)


def _check(dialect: Dialect, fallback_url: Any) -> None:
    guards = _guards.active
    if not guards or is_trusted(dialect):
        return
    url, site = _sites.get(dialect, (None, None))
    if url is None:
        url = fallback_url()
    if url is not None and is_memory(url):
        return  # nothing outlives an in-memory database
    if url is not None and any(_matches(entry, url) for guard in guards for entry in guard.allow):
        return
    shown = safe_url(url) if url is not None else f"a {dialect.name} database"
    where = f"an engine created at {site}" if site else "an engine created before harness started watching"
    if url is not None and database_key(url) in test_database_urls():
        msg = (
            f"Refusing a connection to harness's test database {shown} from {where}: harness did not adopt that "
            "engine, so its connection would not join the test's transaction. Its writes would survive the test, "
            "and it would wait on the test's locks.\n"
            "- Adopt the engine: harness_engines = app.db:engine in the pytest configuration (or "
            "harness.adopt_engines()), or use db_engine / the app's adopted engine instead of building another."
        )
    else:
        msg = (
            f"Refusing a connection to {shown} from {where}: while tests run, harness lets code reach only the "
            f"databases it created, so that no test writes to a real one.\n{_FIX}"
        )
    with _guards.lock:
        guards[-1].blocked.append(shown)
    raise DatabaseBlockedError(msg)


def _explain_lock_waits(context: Any) -> None:
    # A lock wait on a connection harness does not own (an allowed engine): the same note as its own.
    code = getattr(context.original_exception, "sqlstate", None)
    if (
        code == "55P03"
        and _guards.active
        and context.sqlalchemy_exception is not None
        and not is_trusted(context.dialect)
    ):
        context.sqlalchemy_exception.add_note(TIMEOUT_NOTES[code])


# -- naming databases ------------------------------------------------------------------------------


def _url_from_arguments(dialect: Dialect, cargs: Any, cparams: dict[str, Any]) -> URL | None:
    """The URL a connection is being made to, from the driver's connect arguments."""
    driver = f"{dialect.name}+{dialect.driver}"
    if dialect.name == "sqlite":
        database = cargs[0] if cargs else cparams.get("database", "")
        return URL.create(driver, database=str(database))
    return URL.create(
        driver,
        username=cparams.get("user"),
        host=cparams.get("host"),
        port=cparams.get("port"),
        database=cparams.get("database") or cparams.get("dbname"),
    )


def _matches(entry: str, url: URL) -> bool:
    if entry == "*":
        return True
    database = str(url.database or "")
    if entry in (database, Path(database).name):
        return True
    try:
        wanted = make_url(entry)
    except ArgumentError:
        return False
    return database_key(wanted) == database_key(url)


def _install() -> None:
    # Once per process, and inert while no guard is on: listening on the Engine and Pool classes
    # walks every subclass and live engine, a cost the plugin's guard would pay twice per test.
    if not event.contains(Pool, "checkout", _check_checkout):
        event.listen(Engine, "do_connect", _check_connect)
        event.listen(Pool, "checkout", _check_checkout)
        event.listen(Engine, "handle_error", _explain_lock_waits)


_guards: GuardStack[DatabaseGuard] = GuardStack(_install, lambda: None)
