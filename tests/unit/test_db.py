"""harness.db without pytest machinery: URLs, safety checks, rollback scopes and their guards.

The scope tests run on the backend of the run (SQLite by default, PostgreSQL with
--harness-database-url), through the engine of the test database that the plugin built.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from harness import bind_sessions, commit_scope, create_test_engine, probe_isolation, rollback_scope
from harness.db import check_test_database, normalize_url
from harness.db.drivers import postgres_connect_args, server_settings
from harness.exceptions import (
    ConcurrentSessionError,
    DatabaseConfigError,
    IsolationError,
    IsolationProbeError,
    ScopeError,
    UnsafeDatabaseError,
)
from tests.conftest import SQLITE_FILES_POOLED, count_rows
from tests.models import Base, Campaign, Contact

# How harness shows this file in a location: relative to the working directory, as pytest does.
HERE = __file__.removeprefix(os.getcwd() + os.sep)

CLEAN = {"campaigns": 0, "contacts": 0}


async def assert_clean(engine: AsyncEngine) -> None:
    assert await count_rows(engine) == CLEAN
    pool = engine.sync_engine.pool
    if SQLITE_FILES_POOLED or engine.dialect.name != "sqlite":
        assert pool.checkedout() == 0


# -- URLs and safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite:///test_app.db", "sqlite+aiosqlite:///test_app.db"),
        ("postgresql://u@127.0.0.1/test_app", "postgresql+asyncpg://u@127.0.0.1/test_app"),
        ("postgres://u@localhost/test_app", "postgresql+asyncpg://u@localhost/test_app"),
        (None, "sqlite+aiosqlite://"),
    ],
)
def test_normalize_url_picks_the_async_driver(url: str | None, expected: str) -> None:
    """A URL without a driver gets harness's async driver for its backend."""
    assert normalize_url(url).render_as_string() == expected


def test_unknown_scheme_is_refused_with_the_supported_ones() -> None:
    """An unsupported database names what harness supports."""
    with pytest.raises(DatabaseConfigError) as excinfo:
        normalize_url("mysql://u@127.0.0.1/test_app")
    assert excinfo.value.args == (
        "Unsupported database URL scheme 'mysql'. harness supports 'sqlite+aiosqlite', 'postgresql+asyncpg' "
        "and 'postgresql+psycopg'.",
    )


def test_sync_driver_is_refused_with_the_async_one() -> None:
    """A sync driver in the URL is an error that names the async driver to use."""
    with pytest.raises(DatabaseConfigError) as excinfo:
        normalize_url("postgresql+psycopg2://u@127.0.0.1/test_app")
    assert excinfo.value.args == (
        "Unsupported driver 'psycopg2' for postgresql: harness tests run on SQLAlchemy asyncio, with "
        "'postgresql+asyncpg' or 'postgresql+psycopg'. Use one of those in the URL.",
    )


def test_text_that_is_not_a_url_is_refused() -> None:
    """Garbage in the URL setting is reported with an example of a good URL."""
    with pytest.raises(
        DatabaseConfigError,
        match=r"^'not a url' is not a database URL: it cannot be read as one\. Use a URL such as",
    ):
        normalize_url("not a url")


def test_missing_driver_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a PostgreSQL driver installed, the error names the extra that brings the default;
    a URL that names psycopg names psycopg's."""
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(DatabaseConfigError) as excinfo:
        normalize_url("postgresql://u@127.0.0.1/test_app")
    assert excinfo.value.args == (
        "The 'asyncpg' driver is not installed. Install it with: pip install 'pytest-async-harness[postgres]'",
    )
    with pytest.raises(DatabaseConfigError) as excinfo:
        normalize_url("postgresql+psycopg://u@127.0.0.1/test_app")
    assert excinfo.value.args == (
        "The 'psycopg' driver is not installed. Install it with: pip install 'pytest-async-harness[psycopg]'",
    )


def test_a_url_without_a_driver_imports_no_driver_it_does_not_use() -> None:
    """With asyncpg installed, psycopg is not imported to be passed over: it costs 0.4 s per process."""
    code = (
        "import sys; from harness.db.urls import normalize_url; "
        "normalize_url('postgresql://u@127.0.0.1/test_app'); "
        "print('asyncpg' in sys.modules, 'psycopg' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["True", "False"]


def test_postgresql_urls_get_asyncpg_or_the_psycopg_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL without a driver gets asyncpg, or psycopg 3 where only psycopg is installed; SQLAlchemy's
    own name for psycopg's async side is the same driver."""
    assert normalize_url("postgres://u@127.0.0.1/test_app").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql+psycopg://u@127.0.0.1/test_app").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg_async://u@127.0.0.1/test_app").drivername == "postgresql+psycopg"
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    assert normalize_url("postgresql://u@127.0.0.1/test_app").drivername == "postgresql+psycopg"


def test_database_not_named_for_tests_is_refused() -> None:
    """harness will not touch a PostgreSQL database whose name does not start with test_."""
    with pytest.raises(UnsafeDatabaseError) as excinfo:
        check_test_database("postgresql://u@127.0.0.1/app")
    assert excinfo.value.args == (
        "Refusing to use database 'app': harness only writes to databases it created for tests, whose name starts "
        "with 'test_'. Pass the server URL to harness.TestDatabase (or the harness_database_url setting), which "
        "creates and owns 'test_app'.",
    )


def test_sqlite_file_not_named_for_tests_is_refused() -> None:
    """A SQLite file is only used when its name starts with test_."""
    with pytest.raises(UnsafeDatabaseError, match=r"^Refusing to use SQLite file '/data/app\.db'"):
        check_test_database("sqlite:////data/app.db")
    check_test_database("sqlite:////data/test_app.db")
    check_test_database("sqlite://")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"])
def test_loopback_servers_are_accepted(host: str) -> None:
    """Loopback hosts need no opt-in."""
    assert check_test_database(f"postgresql://u@{host}:5432/test_app").database == "test_app"


def test_unix_socket_is_accepted() -> None:
    """A Unix socket directory counts as local."""
    check_test_database("postgresql://u@/test_app?host=/var/run/postgresql")


def test_remote_server_needs_an_explicit_opt_in() -> None:
    """A non-loopback host is refused unless allow_remote=True."""
    with pytest.raises(UnsafeDatabaseError) as excinfo:
        check_test_database("postgresql://u@db.example.com/test_app")
    assert excinfo.value.args == (
        "Refusing to use database server 'db.example.com': it is not a loopback address, and tests should not reach "
        "a shared server by accident. If this server is really a throwaway test server, opt in with "
        "allow_remote=True (harness_allow_remote_database = true in the pytest configuration).",
    )
    assert check_test_database("postgresql://u@10.0.0.5/test_app", allow_remote=True).host == "10.0.0.5"


@pytest.mark.parametrize("key", ["database", "dbname", "dsn"])
def test_url_query_cannot_redirect_to_another_database(key: str) -> None:
    """A query option that picks another database than the URL's path is refused."""
    with pytest.raises(UnsafeDatabaseError) as excinfo:
        check_test_database(f"postgresql://u@127.0.0.1/test_app?{key}=postgres")
    assert excinfo.value.args == (
        f"Refusing URL query option {key!r}: it would connect to another database than the URL names, past "
        "harness's test-database check. Put the database name in the URL's path.",
    )


def test_connect_args_cannot_redirect_to_another_database_or_host() -> None:
    """connect_args are held to the same rules as the URL."""
    with pytest.raises(UnsafeDatabaseError, match=r"^Refusing connect_args option 'database'"):
        create_test_engine("postgresql://u@127.0.0.1/test_app", connect_args={"database": "postgres"})
    with pytest.raises(UnsafeDatabaseError, match=r"^Refusing to use database server 'db\.example\.com'"):
        create_test_engine("postgresql://u@127.0.0.1/test_app", connect_args={"host": "db.example.com"})


def test_mode_memory_without_uri_is_a_file_and_is_checked() -> None:
    """sqlite's mode=memory only means memory with uri=true; otherwise the file name is checked."""
    with pytest.raises(UnsafeDatabaseError, match=r"^Refusing to use SQLite file '/data/prod\.db'"):
        check_test_database("sqlite:////data/prod.db?mode=memory")
    check_test_database("sqlite:///file:shared?mode=memory&uri=true")


async def test_rollback_scope_refuses_an_engine_without_the_sqlite_fix(tmp_path: Path) -> None:
    """A plain SQLite engine would leak committed rows, so a scope refuses it and names the fix."""
    plain = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'test_plain.db'}")
    with pytest.raises(
        DatabaseConfigError, match=r"^This SQLite engine was not made by harness\.create_test_engine\(\)"
    ):
        async with rollback_scope(plain):
            pass
    await plain.dispose()


async def test_rollback_scope_refuses_a_non_test_database(tmp_path: Path) -> None:
    """An engine on a database not named for tests is refused before anything is written."""
    plain = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}")
    with pytest.raises(UnsafeDatabaseError, match=r"^Refusing to use SQLite file "):
        async with rollback_scope(plain):
            pass
    with pytest.raises(UnsafeDatabaseError):
        await probe_isolation(plain)
    await plain.dispose()
    assert not (tmp_path / "prod.db").exists()


def test_create_test_engine_refuses_a_non_test_database() -> None:
    """The engine builder applies the same safety check."""
    with pytest.raises(UnsafeDatabaseError):
        create_test_engine("sqlite:///app.db")


# -- The isolation matrix ----------------------------------------------------------------------------


async def app_commits(session: AsyncSession, _maker: async_sessionmaker[AsyncSession]) -> None:
    session.add(Campaign(name="committed", contacts=[Contact(phone="+15550000001")]))
    await session.commit()
    assert (await session.scalars(select(Campaign.name))).all() == ["committed"]


async def app_rolls_back(session: AsyncSession, _maker: async_sessionmaker[AsyncSession]) -> None:
    session.add(Campaign(name="kept"))
    await session.commit()
    session.add(Campaign(name="discarded"))
    await session.rollback()
    assert (await session.scalars(select(Campaign.name))).all() == ["kept"]


async def app_nests_savepoints(session: AsyncSession, _maker: async_sessionmaker[AsyncSession]) -> None:
    async with session.begin_nested():
        session.add(Campaign(name="outer"))
        nested = await session.begin_nested()
        session.add(Campaign(name="inner"))
        await session.flush()
        await nested.rollback()
    await session.commit()
    assert (await session.scalars(select(Campaign.name))).all() == ["outer"]


async def integrity_error_in_begin(session: AsyncSession, _maker: async_sessionmaker[AsyncSession]) -> None:
    session.add(Contact(phone="+15550000002"))
    await session.commit()
    with pytest.raises(IntegrityError):
        async with session.begin():
            session.add(Contact(phone="+15550000002"))
            await session.flush()
    assert (await session.scalars(select(Contact.phone))).all() == ["+15550000002"]


async def app_uses_its_own_sessionmaker(
    session: AsyncSession, maker: async_sessionmaker[AsyncSession]
) -> None:
    with bind_sessions(session, maker):
        async with maker() as app_session:
            app_session.add(Campaign(name="from the app"))
            await app_session.commit()
    assert (await session.scalars(select(Campaign.name))).all() == ["from the app"]


async def raw_sql_writes(session: AsyncSession, _maker: async_sessionmaker[AsyncSession]) -> None:
    await session.execute(text("INSERT INTO campaigns (name, daily_limit) VALUES ('raw', 5)"))
    await session.commit()
    assert (await session.execute(text("SELECT count(*) FROM campaigns"))).scalar_one() == 1


async def ddl_inside_the_test(session: AsyncSession, _maker: async_sessionmaker[AsyncSession]) -> None:
    await session.execute(text("CREATE TABLE scratch (id INTEGER)"))
    await session.execute(text("INSERT INTO scratch (id) VALUES (1)"))
    await session.commit()
    session.add(Campaign(name="with ddl"))
    await session.commit()


class Boom(Exception):
    pass


async def fails_mid_transaction(session: AsyncSession, _maker: async_sessionmaker[AsyncSession]) -> None:
    session.add(Campaign(name="half done"))
    await session.flush()
    raise Boom


CASES: list[Callable[[AsyncSession, async_sessionmaker[AsyncSession]], Awaitable[None]]] = [
    app_commits,
    app_rolls_back,
    app_nests_savepoints,
    integrity_error_in_begin,
    app_uses_its_own_sessionmaker,
    raw_sql_writes,
    ddl_inside_the_test,
    fails_mid_transaction,
]


async def run_case(engine: AsyncEngine, case: Callable[..., Awaitable[None]]) -> None:
    maker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with rollback_scope(engine) as session:
            await case(session, maker)
    except Boom:
        pass
    await assert_clean(engine)
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda c: c.dialect.get_table_names(c))
    assert "scratch" not in tables


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
async def test_nothing_leaks_after(db_engine: AsyncEngine, case: Callable[..., Awaitable[None]]) -> None:
    """Whatever the code under test does to its transaction, no row and no connection outlives the scope."""
    await run_case(db_engine, case)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_nothing_leaks_in_a_shuffled_order(db_engine: AsyncEngine, seed: int) -> None:
    """The matrix stays clean in any order: no case depends on a clean-up done by another."""
    cases = CASES.copy()
    random.Random(seed).shuffle(cases)
    for case in cases:
        await run_case(db_engine, case)


async def test_savepoints_are_sent_as_plain_sql(db_engine: AsyncEngine) -> None:
    """Savepoint statements skip SQLAlchemy's per-statement compile and still nest and roll back."""
    engine = create_test_engine(db_engine.url)
    sent: list[tuple[str, bool]] = []

    def record(_c: Any, _cursor: Any, statement: str, _p: Any, context: Any, _many: bool) -> None:
        if statement.split()[0] in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
            sent.append((statement, context.compiled is None))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with rollback_scope(engine) as session:
            assert await session.scalar(text("SELECT 1")) == 1
            await session.commit()
            nested = await session.begin_nested()
            assert await session.scalar(text("SELECT 2")) == 2
            await nested.rollback()
    finally:
        await engine.dispose()
    assert sent == [
        ("SAVEPOINT sa_savepoint_1", True),
        ("RELEASE SAVEPOINT sa_savepoint_1", True),
        ("SAVEPOINT sa_savepoint_2", True),
        ("SAVEPOINT sa_savepoint_3", True),
        ("ROLLBACK TO SAVEPOINT sa_savepoint_3", True),
    ]


# -- Guards ------------------------------------------------------------------------------------------


async def test_postgres_scope_keeps_the_engine_isolation_level(
    db_engine: AsyncEngine, on_postgres: bool
) -> None:
    """The scope's transaction runs in the isolation level the engine was made with."""
    if not on_postgres:
        pytest.skip("SQLite has no isolation levels to choose")
    engine = create_test_engine(db_engine.url, isolation_level="REPEATABLE READ")
    try:
        for _ in range(2):  # a new connection, then one from the pool
            async with rollback_scope(engine) as session:
                assert await session.scalar(text("SHOW transaction_isolation")) == "repeatable read"
    finally:
        await engine.dispose()


async def test_code_that_rolls_back_the_outer_transaction_stays_isolated(db_engine: AsyncEngine) -> None:
    """After the scope's own transaction is rolled back, the next statement's writes are still undone."""
    async with rollback_scope(db_engine) as session:
        connection = await session.connection()
        await connection.rollback()
        await connection.execute(insert(Campaign).values(name="written after the rollback"))
        assert await connection.scalar(select(func.count()).select_from(Campaign)) == 1
    await assert_clean(db_engine)


async def test_a_scope_whose_connection_was_invalidated_ends_cleanly(db_engine: AsyncEngine) -> None:
    """Invalidating the connection discards the transaction; ending the scope reconnects only to close."""
    async with rollback_scope(db_engine) as session:
        session.add(Campaign(name="discarded"))
        await session.flush()
        await (await session.connection()).invalidate()
    await assert_clean(db_engine)


async def test_the_next_scope_can_write_after_a_failed_statement_and_an_invalidated_connection(
    db_engine: AsyncEngine,
) -> None:
    """No lock outlives an invalidated connection (SQLite, SQLAlchemy 2.0: a failed statement's cursor
    lives on in its traceback, and sqlite3 keeps the transaction of a closed connection while it does)."""
    collecting = gc.isenabled()
    gc.disable()  # the traceback must still be garbage, not collected, when the scope ends
    try:
        async with rollback_scope(db_engine) as session:
            session.add(Campaign(id=1, name="first"))
            await session.flush()
            try:
                async with session.begin_nested():
                    await session.execute(insert(Campaign).values(id=1, name="same key"))
            except IntegrityError as error:
                kept: list[Any] = [error]
                kept.append(kept)  # a reference cycle, as exceptions caught in frames make
            del kept
            await (await session.connection()).invalidate()
        async with rollback_scope(db_engine) as session:
            session.add(Campaign(name="written at once"))
            await session.flush()
    finally:
        if collecting:
            gc.enable()
    await assert_clean(db_engine)


async def test_an_options_engine_shares_the_guards_of_its_engine(
    db_engine: AsyncEngine, on_postgres: bool
) -> None:
    """engine.execution_options() shares the dialect the guards hook: scopes on either still work."""
    if not on_postgres:
        pytest.skip("SQLite scopes refuse engines that create_test_engine() did not make")
    async with commit_scope(db_engine.execution_options(logging_token="worker")) as session:
        session.add(Campaign(name="committed for real"))
        await session.commit()
    async with rollback_scope(db_engine) as session:
        session.add(Campaign(name="in a savepoint"))
        await session.commit()  # a savepoint guarded twice looked like two sessions overlapping
        assert await session.scalar(select(func.count()).select_from(Campaign)) == 1
    await assert_clean(db_engine)


async def test_commit_of_the_outer_transaction_is_stopped(db_engine: AsyncEngine) -> None:
    """Connection.commit() through session.connection() raises where it happens and commits nothing."""
    with pytest.raises(IsolationError) as excinfo:
        async with rollback_scope(db_engine) as session:
            session.add(Campaign(name="escapes?"))
            await session.flush()
            connection = await session.connection()
            await connection.commit()
    message = str(excinfo.value)
    assert message.startswith(f"The test's outer transaction was committed at {HERE}:")
    assert "call session.commit() instead" in message
    await assert_clean(db_engine)


@pytest.mark.parametrize(
    "statement",
    [
        "COMMIT",
        "commit",
        "END",
        "ROLLBACK",
        "ROLLBACK WORK",
        "ROLLBACK TRANSACTION",
        "ROLLBACK AND CHAIN",
        "BEGIN",
        "/* retry */ COMMIT",
        "-- retry\nCOMMIT",
    ],
)
async def test_raw_transaction_control_is_stopped(db_engine: AsyncEngine, statement: str) -> None:
    """Raw COMMIT/END/ROLLBACK/BEGIN, with or without comments, would end the outer transaction: refused."""
    with pytest.raises(
        IsolationError, match=rf"^Raw SQL {re.escape(repr(statement.strip()))} at {re.escape(HERE)}:\d+ in "
    ):
        async with rollback_scope(db_engine) as session:
            session.add(Campaign(name="escapes?"))
            await session.flush()
            await session.execute(text(statement))
    await assert_clean(db_engine)


async def test_raw_savepoints_are_allowed(db_engine: AsyncEngine) -> None:
    """SAVEPOINT / ROLLBACK TO stay inside the outer transaction, so they pass."""
    async with rollback_scope(db_engine) as session:
        await session.execute(text("SAVEPOINT mine"))
        session.add(Campaign(name="undone"))
        await session.flush()
        await session.execute(text("ROLLBACK TO SAVEPOINT mine"))
        assert (await session.scalars(select(Campaign))).all() == []
    await assert_clean(db_engine)


async def test_a_connection_opened_from_the_engine_during_a_scope_joins_it(db_engine: AsyncEngine) -> None:
    """Code that opens its own connection during a scope works inside the test's transaction."""
    async with rollback_scope(db_engine) as session:
        session.add(Campaign(name="from the test"))
        await session.flush()
        async with db_engine.begin() as other:  # commits at the end of the block: a savepoint release
            seen = (await other.execute(select(Campaign.name))).scalars().all()
            await other.execute(insert(Campaign).values(name="from the code"))
        assert seen == ["from the test"]
        assert (await session.scalars(select(Campaign.name).order_by(Campaign.id))).all() == [
            "from the test",
            "from the code",
        ]
    await assert_clean(db_engine)


async def test_swallowed_violation_fails_at_scope_exit(db_engine: AsyncEngine) -> None:
    """If the code catches harness's error, the scope raises it again when it ends."""
    with pytest.raises(IsolationError, match=r"^Raw SQL 'COMMIT'"):
        async with rollback_scope(db_engine) as session:
            with contextlib.suppress(IsolationError):
                await session.execute(text("COMMIT"))
    await assert_clean(db_engine)


async def test_concurrent_sessions_get_one_clear_error(db_engine: AsyncEngine) -> None:
    """asyncio.gather over sessions on the shared connection names the overlap and the fix."""

    async def import_contacts(maker: async_sessionmaker[AsyncSession], prefix: str) -> None:
        async with maker() as app_session:
            for n in range(3):
                app_session.add(Contact(phone=f"+1{prefix}{n:07d}"))
                await app_session.flush()
            await app_session.commit()

    maker = async_sessionmaker(expire_on_commit=False)
    with pytest.raises(ConcurrentSessionError) as excinfo:
        async with rollback_scope(db_engine) as session:
            with bind_sessions(session, maker):
                await asyncio.gather(import_contacts(maker, "555"), import_contacts(maker, "556"))
    message = str(excinfo.value)
    assert message.startswith("Two sessions used the test's connection at the same time: task ")
    assert f"at {HERE}:" in message
    assert "(asyncio.gather over sessions). Run them one after another" in message
    await assert_clean(db_engine)


@pytest.mark.parametrize("second_ends_with", ["flush", "commit"])
async def test_a_savepoint_lost_to_overlap_does_not_replace_the_clear_error(
    db_engine: AsyncEngine, second_ends_with: str
) -> None:
    """The first task's rollback discards the second's savepoint: the second still gets ConcurrentSessionError.

    Rolling back to (after the failed flush) or releasing (commit) that savepoint would fail with
    "no such savepoint", which would replace the error.
    """
    maker = async_sessionmaker(expire_on_commit=False)
    first_open, second_open, first_unwound = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with maker() as app_session:
            await app_session.connection()  # SAVEPOINT sa_savepoint_1
            first_open.set()
            await second_open.wait()
            app_session.add(Contact(phone="+15550000001"))
            try:
                # Refused; rolls back to sa_savepoint_1, which ends the second's savepoint too.
                await app_session.flush()
            finally:
                first_unwound.set()

    async def second() -> None:
        async with maker() as app_session:
            await first_open.wait()
            await app_session.connection()  # SAVEPOINT sa_savepoint_2, above the first's
            second_open.set()
            await first_unwound.wait()
            if second_ends_with == "commit":
                await app_session.commit()  # nothing to flush: RELEASE SAVEPOINT sa_savepoint_2
            app_session.add(Contact(phone="+15550000002"))
            await app_session.flush()

    async with rollback_scope(db_engine) as session:
        with bind_sessions(session, maker):
            outcomes = await asyncio.gather(first(), second(), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConcurrentSessionError, ConcurrentSessionError], (
        outcomes
    )
    await assert_clean(db_engine)


async def test_sessions_ended_out_of_order_get_a_clear_error(db_engine: AsyncEngine) -> None:
    """Committing an outer session while a later one is still open would release both savepoints: refused."""
    with pytest.raises(ConcurrentSessionError) as excinfo:
        async with rollback_scope(db_engine) as session:
            maker = async_sessionmaker(expire_on_commit=False)
            with bind_sessions(session, maker):
                first, second = maker(), maker()
                first.add(Campaign(name="first"))
                await first.flush()
                second.add(Campaign(name="second"))
                await second.flush()
                await first.commit()
    assert str(excinfo.value).startswith(
        "Two sessions used the test's connection in overlapping transactions: savepoint "
    )
    assert str(excinfo.value).endswith(
        "Both were opened by one task: end the later session (commit or close it) before the earlier one."
    )
    await assert_clean(db_engine)


async def test_sequential_sessions_on_the_shared_connection_are_fine(db_engine: AsyncEngine) -> None:
    """The overlap guard does not fire for sessions used one after another."""
    async with rollback_scope(db_engine) as session:
        maker = async_sessionmaker(expire_on_commit=False)
        with bind_sessions(session, maker):
            for name in ("a", "b"):
                async with maker() as app_session:
                    app_session.add(Campaign(name=name))
                    await app_session.commit()
        assert len((await session.scalars(select(Campaign))).all()) == 2
    await assert_clean(db_engine)


async def test_objects_stay_usable_after_commit(db_engine: AsyncEngine) -> None:
    """After commit(), attributes load without MissingGreenlet: the scope's session does not expire them."""
    async with rollback_scope(db_engine) as session:
        campaign = Campaign(name="readable", contacts=[Contact(phone="+15550000003")])
        session.add(campaign)
        await session.commit()
        assert (campaign.id, campaign.name, campaign.contacts[0].phone) == (
            campaign.id,
            "readable",
            "+15550000003",
        )
        assert campaign.id is not None


# -- Nesting -----------------------------------------------------------------------------------------


async def test_nested_scope_sees_shared_data_and_discards_its_own(db_engine: AsyncEngine) -> None:
    """Class-level data made in the outer scope is visible in each inner scope, whose work vanishes."""
    async with rollback_scope(db_engine) as class_session:
        shared = Campaign(name="shared")
        class_session.add(shared)
        await class_session.commit()
        for test in ("first", "second"):
            async with rollback_scope(class_session) as session:
                fresh = await session.get(Campaign, shared.id)
                assert fresh is not None
                assert fresh is not shared
                assert (await session.scalars(select(Campaign.name))).all() == ["shared"]
                fresh.name = f"renamed in {test}"
                session.add(Contact(phone=f"+1555{test}"))
                await session.commit()
        async with rollback_scope(class_session) as session:
            assert (await session.scalars(select(Campaign.name))).all() == ["shared"]
            assert (await session.scalars(select(Contact))).all() == []
    await assert_clean(db_engine)


# -- Misuse ------------------------------------------------------------------------------------------


async def test_a_scope_cannot_be_entered_twice(db_engine: AsyncEngine) -> None:
    """Re-entering a used scope object is a ScopeError."""
    scope = rollback_scope(db_engine)
    async with scope:
        pass
    with pytest.raises(ScopeError) as excinfo:
        async with scope:
            pass
    assert excinfo.value.args == (
        "This rollback scope was already used. Call rollback_scope() again for a new scope.",
    )


async def test_session_used_after_its_scope_ended_is_an_error(db_engine: AsyncEngine) -> None:
    """A session kept past its scope fails with advice instead of a closed-connection error."""
    async with rollback_scope(db_engine) as session:
        pass
    with pytest.raises(ScopeError, match=r"^A session of a rollback scope was used after the scope ended\."):
        await session.execute(select(Campaign))
    await assert_clean(db_engine)


async def test_nesting_in_an_ended_scope_is_an_error(db_engine: AsyncEngine) -> None:
    """A nested scope needs its parent to be active."""
    async with rollback_scope(db_engine) as session:
        pass
    with pytest.raises(ScopeError) as excinfo:
        async with rollback_scope(session):
            pass
    assert excinfo.value.args == ("Cannot nest a rollback scope in a scope that has already ended.",)


async def test_nesting_needs_a_scope_session(db_engine: AsyncEngine) -> None:
    """A plain AsyncSession cannot host a nested scope."""
    async with AsyncSession(db_engine) as plain:
        with pytest.raises(ScopeError, match=r"^rollback_scope\(\) takes an AsyncEngine, or the session"):
            async with rollback_scope(plain):
                pass


async def test_scope_of_a_wrong_type_is_a_type_error() -> None:
    """Passing something that is neither an engine nor a session is a TypeError."""
    with pytest.raises(TypeError) as excinfo:
        async with rollback_scope("sqlite://"):  # type: ignore[arg-type]
            pass
    assert excinfo.value.args == (
        "rollback_scope() takes an AsyncEngine or a scope's AsyncSession, got str.",
    )


# -- Binding the app's own sessions -------------------------------------------------------------------


async def test_bind_sessions_points_the_sessionmaker_at_the_scope_and_restores_it(
    db_engine: AsyncEngine,
) -> None:
    """While bound, the app's sessionmaker writes into the test transaction; afterwards it is as before."""
    maker = async_sessionmaker(db_engine, expire_on_commit=True)
    before = dict(maker.kw)
    async with rollback_scope(db_engine) as session:
        with bind_sessions(session, maker):
            async with maker() as app_session:
                app_session.add(Campaign(name="from the app"))
                await app_session.commit()
        assert maker.kw == before
        assert (await session.scalars(select(Campaign.name))).all() == ["from the app"]
    await assert_clean(db_engine)


async def test_bind_sessions_rejects_a_sync_sessionmaker(db_engine: AsyncEngine) -> None:
    """A sync sessionmaker cannot join an async scope: the error says what to pass."""
    from sqlalchemy.orm import sessionmaker

    async with rollback_scope(db_engine) as session:
        with pytest.raises(TypeError) as excinfo, bind_sessions(session, sessionmaker()):  # type: ignore[arg-type]
            pass
    assert excinfo.value.args == (
        "bind_sessions() binds async_sessionmaker objects, got sessionmaker. Pass the app's async_sessionmaker(...).",
    )


async def test_bind_sessions_needs_a_scope_session(db_engine: AsyncEngine) -> None:
    """Binding to a session that belongs to no scope names what to pass."""
    async with AsyncSession(db_engine) as plain:
        with pytest.raises(ScopeError) as excinfo, bind_sessions(plain):
            pass
    assert excinfo.value.args == (
        "This session does not belong to a rollback scope. Pass the session yielded by rollback_scope() "
        "(db_session under pytest).",
    )


async def test_bind_sessions_after_the_scope_ended_is_an_error(db_engine: AsyncEngine) -> None:
    """Binding to an ended scope is refused."""
    async with rollback_scope(db_engine) as session:
        pass
    with pytest.raises(ScopeError) as excinfo, bind_sessions(session):
        pass
    assert excinfo.value.args == (
        "The scope of this session has ended. Bind inside `async with rollback_scope(...)`.",
    )


async def test_bind_sessions_refuses_dependencies_with_what_to_bind_instead(db_engine: AsyncEngine) -> None:
    """Replacing a dependency drops what it does after yield (a commit): refused, naming the fix."""

    async def get_db() -> None:
        pass

    async with rollback_scope(db_engine) as session:
        with pytest.raises(TypeError) as excinfo, bind_sessions(session, dependencies=[get_db]):
            pass
    assert excinfo.value.args == (
        "harness no longer replaces dependencies such as test_bind_sessions_refuses_dependencies_with_what_to_bind_"
        "instead.<locals>.get_db: the replacement dropped what the dependency does after `yield` (a commit, say), "
        "so the app's writes were silently rolled back. Adopt the engine the dependency uses instead "
        "(harness_engines = app.db:engine in the pytest configuration, or harness.adopt_engines()), or bind its "
        "async_sessionmaker; the dependency then runs unchanged.",
    )


# -- Probe -------------------------------------------------------------------------------------------


async def test_probe_passes_on_a_test_engine(db_engine: AsyncEngine) -> None:
    """The engine harness built keeps committed rows inside the scope."""
    await probe_isolation(db_engine)


@pytest.mark.allow_database  # an engine harness did not make, on purpose
async def test_probe_catches_the_sqlite_driver_leak(tmp_path: Path) -> None:
    """Without harness's SQLite fix the documented recipe leaks, and the probe says so loudly."""
    plain = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'test_plain.db'}")
    try:
        with pytest.raises(
            IsolationProbeError, match=r"row\(s\) committed inside a rollback scope were still there"
        ):
            await probe_isolation(plain)
    finally:
        await plain.dispose()


async def test_probe_passes_with_the_fix_on_the_same_file(tmp_path: Path) -> None:
    """The same file through create_test_engine does not leak."""
    engine = create_test_engine(f"sqlite+aiosqlite:///{tmp_path / 'test_fixed.db'}")
    try:
        await probe_isolation(engine)
    finally:
        await engine.dispose()


# -- PostgreSQL timeouts -----------------------------------------------------------------------------


async def test_lock_wait_fails_fast_with_an_explanation(db_engine: AsyncEngine, on_postgres: bool) -> None:
    """A statement blocked by another connection's lock fails after lock_timeout, with harness's note."""
    if not on_postgres:
        pytest.skip("lock_timeout is a PostgreSQL setting")
    other = create_test_engine(db_engine.url, lock_timeout=0.2)
    try:
        async with rollback_scope(db_engine) as session:
            await session.execute(text("LOCK TABLE campaigns IN ACCESS EXCLUSIVE MODE"))
            async with other.connect() as blocked:
                with pytest.raises(DBAPIError) as excinfo:
                    await blocked.execute(text("SELECT count(*) FROM campaigns"))
        assert any("waited longer than lock_timeout" in note for note in excinfo.value.__notes__)
    finally:
        await other.dispose()


async def test_the_callers_server_settings_win_in_either_drivers_spelling(
    db_engine: AsyncEngine, on_postgres: bool
) -> None:
    """Settings given in connect_args (asyncpg's server_settings, psycopg's options) are kept beside
    harness's, and win over them; a value with a space survives psycopg's options string."""
    if not on_postgres:
        pytest.skip("server settings are PostgreSQL's")
    settings = {"statement_timeout": "123s", "application_name": "my app"}
    if db_engine.url.get_driver_name() == "psycopg":
        spelled: dict[str, Any] = {"options": "-c statement_timeout=123s", "application_name": "my app"}
    else:
        spelled = {"server_settings": settings}
    engine = create_test_engine(db_engine.url, connect_args=spelled)
    try:
        async with engine.connect() as connection:
            shown = [
                await connection.scalar(text(f"SHOW {name}"))
                for name in ("statement_timeout", "application_name", "lock_timeout")
            ]
        assert shown == ["123s", "my app", "5s"]
    finally:
        await engine.dispose()


def test_connect_args_are_written_in_each_drivers_spelling() -> None:
    """One set of settings, two spellings; the caller's timeouts win, and only harness's own
    statement_timeout gets a client-side command timeout."""
    settings = {"application_name": "harness", "statement_timeout": "60000ms", "search_path": "a b"}
    assert postgres_connect_args(
        "asyncpg", {"timeout": 3}, connect_timeout=10, settings=settings, command_timeout=65
    ) == {
        "timeout": 3,
        "command_timeout": 65,
        "server_settings": settings,
    }
    psycopg = postgres_connect_args("psycopg", {"options": "-c x=1"}, connect_timeout=10.4, settings=settings)
    assert psycopg == {
        "connect_timeout": 10,
        "options": r"-c application_name=harness -c statement_timeout=60000ms -c search_path=a\ b",
    }
    assert server_settings("psycopg", psycopg) == settings


# -- commit_scope: real commits, then the added rows deleted ---------------------------------------


async def test_commit_scope_commits_for_real_and_deletes_the_added_rows(db_engine: AsyncEngine) -> None:
    """Rows committed in the scope are visible to other connections, and gone after it."""
    async with commit_scope(db_engine) as session:
        session.add(Campaign(name="real", contacts=[Contact(phone="+1")]))
        await session.commit()
        assert await count_rows(db_engine) == {"campaigns": 1, "contacts": 1}
    await assert_clean(db_engine)


async def add_concurrently(session: AsyncSession, names: list[str]) -> async_sessionmaker[AsyncSession]:
    """Commit one campaign per name, each from its own session of a sessionmaker bound to the scope."""
    maker = async_sessionmaker()
    with bind_sessions(session, maker):

        async def add(name: str) -> None:
            async with maker() as own:
                own.add(Campaign(name=name))
                await asyncio.sleep(0)
                await own.commit()

        await asyncio.gather(*(add(name) for name in names))
    return maker


async def test_commit_scope_serves_sessions_running_concurrently(db_engine: AsyncEngine) -> None:
    """asyncio.gather over separate sessions works: each has its own connection."""
    async with commit_scope(db_engine) as session:
        maker = await add_concurrently(session, ["a", "b", "c"])
        assert await count_rows(db_engine) == {"campaigns": 3, "contacts": 0}
    assert maker.kw.get("bind") is None  # restored
    await assert_clean(db_engine)


async def test_commit_scope_sessions_that_only_read_lock_nothing(db_engine: AsyncEngine) -> None:
    """A session that read and has not written yet (awaiting an HTTP call, say) does not stop another
    from committing, and its next read sees that commit, as under PostgreSQL's READ COMMITTED."""
    async with commit_scope(db_engine), AsyncSession(db_engine) as reader:
        assert await reader.scalar(select(func.count()).select_from(Campaign)) == 0
        async with AsyncSession(db_engine) as writer:
            writer.add(Campaign(name="meanwhile"))
            await asyncio.wait_for(writer.commit(), timeout=2)  # SQLite would wait 5 s for a held lock
        assert await reader.scalar(select(func.count()).select_from(Campaign)) == 1
        reader.add(Campaign(name="after"))
        await reader.commit()
    await assert_clean(db_engine)


@pytest.mark.skipif(not SQLITE_FILES_POOLED, reason="SQLAlchemy < 2.0.38 does not pool aiosqlite files")
def test_commit_scope_on_a_sqlite_file_serves_more_sessions_than_its_pool_in_each_event_loop(
    tmp_path: Path,
) -> None:
    """Sessions that wait for a pooled connection bind the pool to their loop; the next loop (the next
    test's) still gets connections."""
    engine = create_test_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'test_pool.db'}", pool_size=1, max_overflow=0
    )

    async def busy() -> int:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with commit_scope(engine) as session:
            await add_concurrently(session, [f"c{n}" for n in range(4)])
            return (await count_rows(engine))["campaigns"]

    try:
        assert [asyncio.run(busy()), asyncio.run(busy())] == [4, 4]
    finally:
        asyncio.run(engine.dispose())


def test_a_commit_scope_leaves_connections_in_use_alone(tmp_path: Path) -> None:
    """The pool is renewed only when no connection is out: an outer scope's connection is closed, not orphaned."""
    engine = create_test_engine(f"sqlite+aiosqlite:///{tmp_path / 'test_nested.db'}")

    async def nested() -> int | None:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with commit_scope(engine) as outer:
            await outer.scalar(select(func.count()).select_from(Campaign))  # holds a connection from here on
            async with commit_scope(engine) as inner:
                inner.add(Campaign(name="inner"))
                await inner.commit()
            count = await outer.scalar(select(func.count()).select_from(Campaign))
            await outer.commit()
        await engine.dispose()
        return count

    before = set(threading.enumerate())  # aiosqlite runs a thread per connection, until it is closed
    assert asyncio.run(nested()) == 0  # the inner scope deleted its row
    started = [thread for thread in threading.enumerate() if thread not in before]
    for thread in started:
        thread.join(timeout=10)  # a closed connection's thread ends soon after; an orphaned one never
    assert [thread for thread in started if thread.is_alive()] == []


async def test_commit_scope_keeps_rows_that_were_there_before(db_engine: AsyncEngine) -> None:
    """Only rows added in the scope are deleted; rows from before (seed data) stay."""
    async with commit_scope(db_engine) as outer:
        outer.add(Campaign(name="seed"))
        await outer.commit()
        async with commit_scope(db_engine) as inner:
            inner.add_all([Campaign(name="added"), Contact(phone="+2")])
            await inner.commit()
        names = (await outer.scalars(select(Campaign.name))).all()
        assert names == ["seed"]
        assert await count_rows(db_engine) == {"campaigns": 1, "contacts": 0}
    await assert_clean(db_engine)


async def test_commit_scope_reports_rows_from_before_that_it_cannot_bring_back(
    db_engine: AsyncEngine,
) -> None:
    """Deleting a row that existed before the scope is an IsolationError naming the table."""
    async with commit_scope(db_engine) as outer:
        outer.add(Campaign(name="seed"))
        await outer.commit()
        with pytest.raises(IsolationError, match=r"deleted for real: 1 of campaigns\. .*cannot bring back"):
            async with commit_scope(db_engine) as inner:
                await inner.execute(text("DELETE FROM campaigns"))
                await inner.commit()
    await assert_clean(db_engine)


async def test_commit_scope_needs_primary_keys_to_tell_rows_apart(db_engine: AsyncEngine) -> None:
    """A table with rows and no primary key is refused on entry, with the fix."""
    async with db_engine.begin() as connection:
        await connection.execute(text("CREATE TABLE test_no_key (value INTEGER)"))
        await connection.execute(text("INSERT INTO test_no_key (value) VALUES (1)"))
    try:
        with pytest.raises(
            ScopeError, match=r"'test_no_key' has rows but no primary key.*Give the table a primary key"
        ):
            async with commit_scope(db_engine):
                pass
    finally:
        async with db_engine.begin() as connection:
            await connection.execute(text("DROP TABLE test_no_key"))


async def test_commit_scope_refuses_a_non_test_database(tmp_path: Path) -> None:
    """The cleanup deletes rows: an engine on a database not named for tests is refused."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    try:
        with pytest.raises(UnsafeDatabaseError, match="only writes to databases it created for tests"):
            async with commit_scope(engine):
                pass
    finally:
        await engine.dispose()


async def test_commit_scope_cleans_after_tables_with_more_rows_than_a_statement_takes_parameters(
    db_engine: AsyncEngine,
) -> None:
    """40,000 rows from before: the added row is deleted by its own key, within the drivers' limits."""
    from sqlalchemy import insert

    async with commit_scope(db_engine) as outer:
        await outer.execute(insert(Campaign), [{"name": f"c{i}"} for i in range(40_000)])
        await outer.commit()
        async with commit_scope(db_engine) as inner:
            inner.add(Campaign(name="added"))
            await inner.commit()
        assert await count_rows(db_engine) == {"campaigns": 40_000, "contacts": 0}
    await assert_clean(db_engine)


async def test_commit_scope_cleans_tables_of_other_schemas(db_engine: AsyncEngine, on_postgres: bool) -> None:
    """On PostgreSQL, a table in a schema of its own is watched too."""
    if not on_postgres:
        pytest.skip("schemas are a PostgreSQL feature")
    async with db_engine.begin() as connection:
        await connection.execute(text("CREATE SCHEMA test_side"))
        await connection.execute(text("CREATE TABLE test_side.events (id serial PRIMARY KEY)"))
    try:
        async with commit_scope(db_engine) as session:
            await session.execute(text("INSERT INTO test_side.events DEFAULT VALUES"))
            await session.commit()
        async with db_engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM test_side.events"))).scalar() == 0
    finally:
        async with db_engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA test_side CASCADE"))


async def test_commit_scope_puts_sequences_back_even_after_a_body_that_failed(
    db_engine: AsyncEngine, on_postgres: bool
) -> None:
    """Ids drawn in a scope are drawn again after it, as if it never ran: a PostgreSQL sequence, and a
    SQLite AUTOINCREMENT counter (which outlives deleted rows)."""
    key = "id serial PRIMARY KEY" if on_postgres else "id INTEGER PRIMARY KEY AUTOINCREMENT"
    async with db_engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE test_counted ({key}, name TEXT)"))

    async def ids_drawn(*, fail: bool = False) -> list[int]:
        async with commit_scope(db_engine) as session:
            for name in ("a", "b"):
                await session.execute(text("INSERT INTO test_counted (name) VALUES (:name)"), {"name": name})
            await session.commit()
            ids = list((await session.scalars(text("SELECT id FROM test_counted ORDER BY id"))).all())
            if fail:
                raise RuntimeError("halfway")  # noqa: EM101
            return ids

    try:
        with pytest.raises(RuntimeError, match="halfway"):
            await ids_drawn(fail=True)
        assert await ids_drawn() == [1, 2]  # never used: starts again at the beginning
        async with db_engine.begin() as connection:  # a row from before the next scopes
            await connection.execute(text("INSERT INTO test_counted (name) VALUES ('seed')"))
        assert [await ids_drawn(), await ids_drawn()] == [[1, 2, 3], [1, 2, 3]]
    finally:
        async with db_engine.begin() as connection:
            await connection.execute(text("DROP TABLE test_counted"))


async def test_commit_scope_sees_a_row_from_before_replaced_by_an_added_one(db_engine: AsyncEngine) -> None:
    """The same number of rows, different keys: the added row is deleted and the lost one reported."""
    async with commit_scope(db_engine) as outer:
        outer.add(Campaign(name="seed"))
        await outer.commit()
        with pytest.raises(IsolationError, match=r"deleted for real: 1 of campaigns\."):
            async with commit_scope(db_engine) as inner:
                await inner.execute(text("DELETE FROM campaigns"))
                inner.add(Campaign(id=1000, name="replacement"))  # not the id SQLite would reuse
                await inner.commit()
        assert await count_rows(db_engine) == {"campaigns": 0, "contacts": 0}
    await assert_clean(db_engine)


async def test_commit_scope_keeps_rows_committed_between_scopes(db_engine: AsyncEngine) -> None:
    """What a scope learnt about the tables is reused only while they are as it left them."""
    async with commit_scope(db_engine):
        pass
    try:
        async with db_engine.begin() as connection:
            await connection.execute(insert(Campaign).values(name="between"))
        async with commit_scope(db_engine) as session:
            session.add(Campaign(name="inside"))
            await session.commit()
        async with db_engine.connect() as connection:
            assert (await connection.scalars(select(Campaign.name))).all() == ["between"]
    finally:
        async with db_engine.begin() as connection:
            await connection.execute(text("DELETE FROM campaigns"))


async def test_commit_scope_statements_do_not_grow_with_untouched_tables(db_engine: AsyncEngine) -> None:
    """Clean-up is proportional to what the test wrote: tables it left alone, rows in them or not,
    cost no statement of their own (one query fingerprints them all)."""

    async def statements_of_a_scope(tables: int) -> list[str]:
        async with db_engine.begin() as connection:
            for n in range(tables):
                await connection.execute(text(f"CREATE TABLE test_wide_{n} (id INTEGER PRIMARY KEY)"))
                await connection.execute(text(f"INSERT INTO test_wide_{n} (id) VALUES (1), (2)"))
        try:
            async with commit_scope(db_engine):  # learns the tables
                pass
            statements: list[str] = []
            listener = lambda *args: statements.append(args[2])  # noqa: E731
            event.listen(db_engine.sync_engine, "before_cursor_execute", listener)
            try:
                async with commit_scope(db_engine) as session:
                    await session.execute(text("INSERT INTO test_wide_0 (id) VALUES (3)"))
                    await session.commit()
            finally:
                event.remove(db_engine.sync_engine, "before_cursor_execute", listener)
            async with db_engine.connect() as connection:
                assert (await connection.scalars(text("SELECT id FROM test_wide_0"))).all() == [1, 2]
            return statements
        finally:
            async with db_engine.begin() as connection:
                for n in range(tables):
                    await connection.execute(text(f"DROP TABLE test_wide_{n}"))

    few, many = await statements_of_a_scope(3), await statements_of_a_scope(30)
    assert len(few) == len(many)
    assert not [s for s in many if "test_wide_1" in s and "count(*)" not in s]  # untouched: only counted


async def test_a_rollback_scope_cannot_nest_in_a_commit_scope(db_engine: AsyncEngine) -> None:
    """Its commits are real, so nesting is refused with what to pass instead."""
    async with commit_scope(db_engine) as session:
        with pytest.raises(
            ScopeError, match=r"cannot nest in the session of a commit scope.*Pass the engine instead"
        ):
            async with rollback_scope(session):
                pass


async def test_a_commit_scope_is_used_once_and_makes_no_sessions_after_it_ends(
    db_engine: AsyncEngine,
) -> None:
    """Entering it twice, or asking the ended scope for a session, is a ScopeError that says what to do."""
    scope = commit_scope(db_engine)
    async with scope:
        pass
    with pytest.raises(
        ScopeError, match=r"The commit scope has ended\. Open a new scope with commit_scope\(\)\."
    ):
        scope.new_session()
    with pytest.raises(ScopeError, match=r"already used\. Call commit_scope\(\) again for a new scope\."):
        async with scope:
            pass


async def test_commit_scope_takes_an_engine() -> None:
    """A session (or anything else) instead of an engine is a TypeError naming what it got."""
    with pytest.raises(TypeError, match=r"commit_scope\(\) takes an AsyncEngine, got AsyncSession\."):
        async with commit_scope(AsyncSession()):  # type: ignore[arg-type]
            pass


def test_a_pooled_sqlite_connection_serves_the_next_event_loop(tmp_path: Path) -> None:
    """A connection whose lock a task of one loop waited for works in the next loop (per-test loops)."""
    engine = create_test_engine(f"sqlite+aiosqlite:///{tmp_path / 'test_loops.db'}")

    async def contend() -> None:
        async with engine.connect() as connection:
            adapter = (await connection.get_raw_connection()).dbapi_connection
            if not hasattr(adapter, "_execute_mutex"):
                pytest.skip("this SQLAlchemy's aiosqlite adapter has no lock (2.0)")

            async def hold() -> None:
                async with adapter._execute_mutex:  # type: ignore[union-attr]  # SQLAlchemy's own lock
                    await asyncio.sleep(0.01)

            await asyncio.gather(hold(), hold())  # the second waits: the lock binds to this loop

    asyncio.run(contend())
    asyncio.run(contend())  # a new loop, the same pooled connection
    asyncio.run(engine.dispose())


class AppSession(AsyncSession):
    """An app's own session class, as some apps give their async_sessionmaker."""


async def test_a_scope_takes_its_session_settings_from_the_apps_sessionmaker(db_engine: AsyncEngine) -> None:
    """Copying expire_on_commit and the rest by hand was how a user met MissingGreenlet: with
    sessionmaker=, a scope's sessions are made as the app's sessionmaker makes them."""
    app_sessions = async_sessionmaker(
        class_=AppSession, expire_on_commit=True, autoflush=False, info={"app": 1}
    )
    async with rollback_scope(db_engine, sessionmaker=app_sessions) as session:
        assert type(session) is AppSession
        assert (session.sync_session.expire_on_commit, session.sync_session.autoflush) == (True, False)
        assert session.info["app"] == 1
        campaign = Campaign(name="spring")
        session.add(campaign)
        await session.commit()  # a savepoint, expiring as the app's sessions do
        assert "name" not in campaign.__dict__
        async with rollback_scope(db_engine, sessionmaker=app_sessions, expire_on_commit=False) as other:
            assert other.sync_session.expire_on_commit is False  # options given outright win
    async with commit_scope(db_engine, sessionmaker=app_sessions) as session:
        assert type(session) is AppSession
        assert session.sync_session.expire_on_commit is True
    await assert_clean(db_engine)


async def test_a_sessionmaker_bound_to_the_test_engine_can_be_the_scope_itself(
    db_engine: AsyncEngine,
) -> None:
    """rollback_scope(Session) for a sessionmaker bound to a test engine; an unbound one is refused
    with the call that works."""
    bound = async_sessionmaker(db_engine, expire_on_commit=True)
    async with rollback_scope(bound) as session:
        session.add(Campaign(name="spring"))
        await session.commit()
        assert session.sync_session.expire_on_commit is True
    await assert_clean(db_engine)
    with pytest.raises(ScopeError) as unbound:
        rollback_scope(async_sessionmaker())
    assert str(unbound.value) == (
        "rollback_scope() was given an async_sessionmaker that is not bound to an AsyncEngine. Pass the test "
        "engine and the sessionmaker to copy its settings from: rollback_scope(engine, sessionmaker=Session)."
    )
    with pytest.raises(TypeError) as twice:
        commit_scope(bound, sessionmaker=bound)
    assert (
        str(twice.value)
        == "commit_scope() got a sessionmaker twice: pass the engine first, then sessionmaker=..."
    )
    with pytest.raises(TypeError) as not_a_maker:
        rollback_scope(db_engine, sessionmaker=AsyncSession)  # type: ignore[arg-type]
    assert str(not_a_maker.value) == "rollback_scope(sessionmaker=...) takes an async_sessionmaker, got type."
