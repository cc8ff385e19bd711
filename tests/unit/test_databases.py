"""harness.db.testdb: test databases are created, marked, cloned, reused and dropped, and nothing else is touched."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import re
import socket
import sqlite3
import warnings
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from harness.db import Schema, TestDatabase, create_test_engine, probe_isolation, rollback_scope
from harness.db import admin as admin_module
from harness.db.__main__ import main as harness_db_main
from harness.db.engines import trust
from harness.db.leases import left_behind, sqlite_left_behind
from harness.exceptions import DatabaseConfigError, DatabaseUnavailableError, SchemaError, UnsafeDatabaseError
from tests.conftest import SQLITE_FILES_POOLED
from tests.models import Base, Campaign


@pytest.fixture
def server_url(harness_database: TestDatabase, tmp_path: Path) -> str:
    """Where this run's test databases live: the PostgreSQL server, or a temporary folder for SQLite."""
    if harness_database.is_postgres:
        return harness_database.server_url.render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
async def admin(harness_database: TestDatabase) -> AsyncIterator[AsyncConnection]:
    if not harness_database.is_postgres:
        pytest.skip("PostgreSQL server databases")
    engine = create_async_engine(
        harness_database.server_url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    trust(engine)  # the server's maintenance database, read by these tests past the database guard
    async with engine.connect() as connection:
        yield connection
    await engine.dispose()


async def database_names(admin: AsyncConnection) -> set[str]:
    return set((await admin.execute(text("SELECT datname FROM pg_database"))).scalars())


async def table_names(database: TestDatabase) -> list[str]:
    assert database.engine is not None
    async with database.engine.connect() as connection:
        return sorted(await connection.run_sync(lambda c: c.dialect.get_table_names(c)))


def test_names_derive_from_the_url_with_the_run_and_worker_appended(server_url: str) -> None:
    """test_<name>_<run>, plus _gw0 under xdist: runs sharing a server never share a database; the
    template is shared, as its schema is."""
    run = hashlib.sha256(b"run-1").hexdigest()[:6]
    database = TestDatabase(server_url, name="shop", worker="gw1", run_id="run-1")
    assert database.name == f"test_shop_{run}_gw1"
    assert database.template_name == "test_shop_template"
    assert TestDatabase(server_url, name="test_shop", run_id="run-1").name == f"test_shop_{run}"
    assert (
        TestDatabase(server_url, name="shop", run_id="run-2").name
        != TestDatabase(server_url, name="shop").name
    )


def test_default_is_a_sqlite_file_in_the_temporary_directory() -> None:
    """With no URL, the embedded default is a SQLite file per worker."""
    database = TestDatabase(name="demo", worker="gw0", run_id="run-1")
    assert database.url.get_backend_name() == "sqlite"
    assert Path(str(database.url.database)).name == "test_demo_4e65d3_gw0.sqlite3"  # sha256("run-1")[:6]


def test_postgres_names_must_be_plain_identifiers() -> None:
    """Names are quoted into DDL, so only safe characters are accepted."""
    with pytest.raises(DatabaseConfigError) as excinfo:
        TestDatabase("postgresql://u@127.0.0.1/x", name="My-App")
    assert excinfo.value.args == (
        "Test database name 'test_My-App' must use only lower-case letters, digits and underscores. Choose one "
        "with harness_database_name in the pytest configuration (TestDatabase(name=...) without the plugin).",
    )


def test_postgres_names_must_fit_the_identifier_limit() -> None:
    """A name whose template would pass PostgreSQL's 63-byte limit is refused up front."""
    with pytest.raises(
        DatabaseConfigError, match=r"^Test database name 'test_a+' is too long: with '_template'"
    ):
        TestDatabase("postgresql://u@127.0.0.1/x", name="a" * 50)


async def test_an_interrupted_build_is_not_reused(tmp_path: Path) -> None:
    """A template left half-built (marked 'building') is rebuilt, even with reuse."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    first = TestDatabase(url, schema=Base.metadata, name="halfbuilt", reuse=True)
    await first.create()
    await first.drop()
    template = tmp_path / "test_halfbuilt_template.sqlite3"
    with contextlib.closing(sqlite3.connect(template)) as connection:  # the build stopped half-way
        connection.execute("DROP TABLE contacts")
        connection.commit()
    Path(f"{template}.harness").write_text('{"mark": "created by harness for tests", "schema": "building"}')
    again = TestDatabase(url, schema=Base.metadata, name="halfbuilt", reuse=True)
    await again.create()
    assert await table_names(again) == sorted(Base.metadata.tables)
    again.reuse = False
    await again.drop()
    assert not list(tmp_path.glob("test_halfbuilt*"))


async def test_create_builds_the_schema_and_drop_removes_it(server_url: str) -> None:
    """create() makes the database with every table; drop() removes it."""
    database = TestDatabase(server_url, schema=Base.metadata, name="lifecycle")
    await database.create()
    assert await table_names(database) == sorted(Base.metadata.tables)
    await database.drop()
    if not database.is_postgres:
        assert not Path(str(database.url.database)).exists()


async def test_postgres_clones_workers_from_one_template(server_url: str, admin: AsyncConnection) -> None:
    """Workers get CREATE DATABASE … TEMPLATE clones; the template is built once per run."""
    run = "run-1"
    gw0 = TestDatabase(server_url, schema=Base.metadata, name="clones", worker="gw0", run_id=run)
    gw1 = TestDatabase(server_url, schema=Base.metadata, name="clones", worker="gw1", run_id=run)
    await gw0.create()
    template_oid = (
        await admin.execute(text("SELECT oid FROM pg_database WHERE datname = 'test_clones_template'"))
    ).scalar()
    await gw1.create()
    names = {gw0.name, gw1.name, "test_clones_template"}
    assert names <= await database_names(admin)
    assert (
        await admin.execute(text("SELECT oid FROM pg_database WHERE datname = 'test_clones_template'"))
    ).scalar() == template_oid
    assert await table_names(gw1) == sorted(Base.metadata.tables)
    await gw0.drop(template=False)
    await gw1.drop()
    assert not names & await database_names(admin)


async def test_a_foreign_database_with_a_test_name_is_never_dropped(
    server_url: str, admin: AsyncConnection
) -> None:
    """A test_ database that harness did not create is left alone, with an error saying so."""
    await admin.execute(text('CREATE DATABASE "test_foreign_template"'))
    try:
        with pytest.raises(UnsafeDatabaseError) as excinfo:
            await TestDatabase(server_url, schema=Base.metadata, name="foreign").create()
        assert excinfo.value.args == (
            "Database 'test_foreign_template' exists on the server but was not created by harness, so harness will "
            "not drop or change it. Drop it yourself if it is disposable, or choose another test database name "
            "(TestDatabase(name=...) or the harness_database_name setting).",
        )
        assert "test_foreign_template" in await database_names(admin)
    finally:
        await admin.execute(text('DROP DATABASE "test_foreign_template"'))


async def test_a_foreign_sqlite_file_is_never_deleted(tmp_path: Path) -> None:
    """A test_ file without harness's marker is not deleted or changed."""
    foreign = tmp_path / "test_mine_template.sqlite3"
    foreign.write_bytes(b"precious")
    database = TestDatabase(f"sqlite+aiosqlite:///{tmp_path / 'mine.db'}", schema=Base.metadata)
    with pytest.raises(
        UnsafeDatabaseError,
        match=r"^SQLite file '.*test_mine_template\.sqlite3' exists but was not created by harness",
    ):
        await database.create()
    assert foreign.read_bytes() == b"precious"


async def test_reuse_keeps_the_schema_and_starts_each_run_from_a_fresh_copy(server_url: str) -> None:
    """With reuse the built schema is kept, but rows one run committed (say, a commit_scope killed
    before its clean-up) are not in the next run's database; recreate rebuilds; so does a changed schema."""
    builds = []

    def build_campaigns(connection: Connection) -> None:
        builds.append(1)
        Base.metadata.create_all(connection)

    def database(run: str, schema: Schema = build_campaigns, **options: bool) -> TestDatabase:
        return TestDatabase(server_url, schema=schema, name="reuse", reuse=True, run_id=run, **options)

    killed = database("run-1")
    engine = await killed.create()
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO campaigns (name, daily_limit) VALUES ('left over', 1)"))
    await engine.dispose()
    killed._end_lease()  # as the process's end would: no drop

    async def campaigns(database: TestDatabase) -> int:
        engine = await database.create()
        async with engine.connect() as connection:
            count = int((await connection.execute(text("SELECT count(*) FROM campaigns"))).scalar_one())
        await database.drop()
        return count

    assert (await campaigns(database("run-2")), len(builds)) == (0, 1)
    assert (await campaigns(database("run-3", recreate=True)), len(builds)) == (0, 2)
    changed = MetaData()
    Table(
        "campaigns",
        changed,
        Column("id", Integer, primary_key=True),
        Column("name", Integer),
        Column("daily_limit", Integer),
    )
    assert await campaigns(database("run-4", changed)) == 0
    killed.reuse = False
    await killed.drop()


async def test_schema_callables_sync_and_async_build_the_schema(server_url: str) -> None:
    """A sync callable gets a Connection (Alembic style), an async one an AsyncConnection."""

    def migrate(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE migrated (id INTEGER PRIMARY KEY)"))

    async def migrate_async(connection: AsyncConnection) -> None:
        await connection.execute(text("CREATE TABLE migrated_async (id INTEGER PRIMARY KEY)"))

    for schema, table in ((migrate, "migrated"), (migrate_async, "migrated_async")):
        database = TestDatabase(server_url, schema=schema, name=table)
        await database.create()
        assert await table_names(database) == [table]
        await database.drop()


async def test_a_failing_schema_callable_is_reported_and_cleaned_up(server_url: str) -> None:
    """The error names the callable and its exception; no half-built database is left behind."""

    def broken_migration(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE half (id INTEGER)"))
        msg = "revision 42 failed"
        raise RuntimeError(msg)

    database = TestDatabase(server_url, schema=broken_migration, name="broken")
    with pytest.raises(SchemaError) as excinfo:
        await database.create()
    assert excinfo.value.args == (
        "Building the schema of test database "
        f"{database.template_name!r} failed: "  # the template every worker copies, on SQLite too
        "test_a_failing_schema_callable_is_reported_and_cleaned_up.<locals>.broken_migration raised "
        "RuntimeError: revision 42 failed. Fix the schema callable (or the models); the half-built database was discarded.",
    )
    if not database.is_postgres:
        folder = Path(str(database.url.database)).parent
        assert not list(folder.glob("test_broken*.sqlite3*"))
    # The name is free again: a fixed schema builds.
    fixed = TestDatabase(server_url, schema=Base.metadata, name="broken")
    await fixed.create()
    await fixed.drop()


async def test_pool_sizing_options_reach_the_test_engine_and_not_the_schema_build(server_url: str) -> None:
    """engine_options with pool_size/max_overflow build (on a pool-less engine) and size the test engine."""
    if not SQLITE_FILES_POOLED and server_url.startswith("sqlite"):
        pytest.skip("SQLAlchemy < 2.0.38 does not pool aiosqlite files")
    options = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 5}
    database = TestDatabase(server_url, schema=Base.metadata, name="pooled", engine_options=options)
    await database.create()
    try:
        assert database.engine is not None
        assert (database.engine.pool.size(), database.engine.pool.timeout()) == (2, 5)  # type: ignore[attr-defined]
        assert "contacts" in await table_names(database)
    finally:
        await database.drop()


def test_models_that_are_not_tables_are_a_schema_error() -> None:
    """A foreign key to a table the models lack stops the run as a SchemaError, naming the column."""
    metadata = MetaData()
    Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("customer_id", ForeignKey("customers.id")),
    )
    with pytest.raises(SchemaError) as excinfo:
        TestDatabase(schema=metadata, name="orders").create_sync()  # refused before it connects
    assert re.match(
        "The models cannot be turned into tables for test database 'test_orders_[0-9a-f]{6}': "
        "NoReferencedTableError: "
        "Foreign key associated with column 'orders.customer_id' could not find table 'customers'",
        str(excinfo.value),
    )
    assert str(excinfo.value).endswith("Fix the models (harness_schema returns their MetaData).")


async def test_a_role_the_server_refuses_is_named(harness_database: TestDatabase) -> None:
    """A server that answers but refuses the role says so, not "is the server running?"."""
    if not harness_database.is_postgres:
        pytest.skip("PostgreSQL roles")
    url = harness_database.server_url.set(username="nobody", password=None)
    with pytest.raises(DatabaseUnavailableError) as excinfo:
        await TestDatabase(url, name="refused").create()
    where = f"{url.host}:{url.port}"
    message = str(excinfo.value)
    prefix = f"The PostgreSQL server at {where} refused the connection: "
    assert message.startswith(prefix)
    # a trusting server says the role does not exist; one that asks for a password (harness.postgres's)
    # will not tell, and says the password failed
    assert message[len(prefix) : message.index(". Check the user")] in (
        'role "nobody" does not exist',
        'password authentication failed for user "nobody"',
        "it asks for a password and the URL gives none",  # psycopg: libpq says no more
    )
    assert message.endswith(
        f"Check the user and password in the URL ({url.set(database='postgres').render_as_string(hide_password=True)}): "
        "harness needs a role that may create databases."
    )


async def test_unreachable_server_says_how_to_get_one() -> None:
    """A server that does not answer is reported with where it was looked for and what to do."""
    with pytest.raises(DatabaseUnavailableError) as excinfo:
        await TestDatabase("postgresql://postgres@127.0.0.1:1/app").create()
    message = str(excinfo.value)
    assert message.startswith("Cannot connect to the PostgreSQL server at 127.0.0.1:1 (")
    assert "Is the server running and is the URL right?" in message
    assert "run pytest with --harness-start-postgres (or `python -m harness.postgres start`)" in message


def test_remote_server_is_refused_before_connecting() -> None:
    """The safety check runs before any connection to a non-loopback server."""
    with pytest.raises(UnsafeDatabaseError, match=r"^Refusing to use database server 'db\.example\.com'"):
        TestDatabase("postgresql://u@db.example.com/app")


def test_sync_create_and_drop_work_inside_and_outside_a_running_loop(server_url: str) -> None:
    """create_sync()/drop_sync() and `with TestDatabase(...)` are for set-up code that is not async
    (a session fixture, setUpModule, a script), and work even where a loop is already running."""
    with TestDatabase(server_url, schema=Base.metadata, name="sync_made") as database:
        assert database.engine is not None
        assert "campaigns" in asyncio.run(table_names(database))
        path = None if database.is_postgres else Path(str(database.url.database))
        if path is not None:
            assert path.exists()
    if path is not None:
        assert not path.exists()  # dropped

    async def inside_a_loop() -> None:
        other = TestDatabase(server_url, schema=Base.metadata, name="sync_made_in_loop")
        other.create_sync()  # on a helper thread's loop (blocking this one meanwhile), not on this one
        assert "campaigns" in await table_names(other)
        other.drop_sync()

    asyncio.run(inside_a_loop())


def test_a_pooled_psycopg_connection_serves_loop_after_loop(server_url: str) -> None:
    """psycopg's connections are not bound to a loop: one is pooled from loop to loop, even after
    tasks of a loop waited for its locks (SQLAlchemy's and psycopg's), which bind to that loop."""
    database = TestDatabase(server_url, schema=Base.metadata, name="psycopg_loops")
    if database.url.get_driver_name() != "psycopg":
        pytest.skip("asyncpg's connections end with their loop (the test above)")
    engine = database.create_sync()

    async def contend() -> object:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            locks = [raw.driver_connection.lock, getattr(raw.dbapi_connection, "_execute_mutex", None)]

            async def hold(lock: asyncio.Lock) -> None:
                async with lock:
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(hold(lock) for lock in locks if lock is not None for _ in range(2)))
            assert await connection.scalar(text("SELECT 1")) == 1
            return raw.driver_connection

    try:
        assert asyncio.run(contend()) is asyncio.run(contend())  # one connection, two loops
    finally:
        database.drop_sync()


def test_one_engine_serves_loop_after_loop_and_drops_without_a_logged_error(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg connections belong to the loop that opened them: a pooled one handed to the next loop
    failed with "attached to a different loop", and drop() from a third logged tracebacks. Pools
    now close with their loop; a loop closed by hand without shutting down is survived too.
    psycopg's connections are not bound to a loop, and stay pooled."""
    database = TestDatabase(server_url, schema=Base.metadata, name="many_loops")
    engine = database.create_sync()

    async def in_a_scope() -> int:
        async with rollback_scope(engine) as session:
            session.add(Campaign(name="spring"))
            await session.flush()
            return int(await session.scalar(select(func.count()).select_from(Campaign)) or 0)

    async def sessions_on_the_server() -> int:  # harness's connections to the database, seen by the server
        admin = create_async_engine(database.server_url.set(database="postgres"), poolclass=NullPool)
        trust(admin)
        async with admin.connect() as connection:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND application_name = 'harness'"
            )
            count = await connection.scalar(text(query), {"name": database.name})
        await admin.dispose()
        return int(count or 0)

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def remember_the_loop() -> int:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await in_a_scope()

    with caplog.at_level(logging.WARNING):
        assert [asyncio.run(remember_the_loop()) for _ in range(3)] == [1, 1, 1]
        gc.collect()
        # Ended loops are not kept alive (a SQLite pool's queue may still name the latest one).
        assert [loop() for loop in loops[:2]] == [None, None]
        if database.is_postgres:
            # asyncpg's: each loop closed its connections; psycopg's: one, pooled from loop to loop
            pooled = 1 if database.url.get_driver_name() == "psycopg" else 0
            assert asyncio.run(sessions_on_the_server()) == pooled
        with warnings.catch_warnings():  # the hand-closed loop's socket is left to the collector
            warnings.simplefilter("ignore", ResourceWarning)
            loop = asyncio.new_event_loop()
            assert loop.run_until_complete(in_a_scope()) == 1
            loop.close()  # no shutdown_asyncgens(): its connection stays in the pool
            assert asyncio.run(in_a_scope()) == 1
            gc.collect()
        database.drop_sync()
    assert [record.getMessage() for record in caplog.records] == []


# -- Faults: bad URLs, foreign databases, servers that do not answer ---------------------------------


def test_a_password_with_an_unencoded_at_sign_is_refused_without_showing_it() -> None:
    for url in ("postgresql://app:s3cr@t9@127.0.0.1:5432/app", "postgresql://app:s3cr@t9@127.0.0.1:54x/app"):
        with pytest.raises(DatabaseConfigError) as caught:
            TestDatabase(url)
        assert "s3cr" not in str(caught.value)
        assert "t9" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://me:s3cret@127.0.0.1:notaport/app", "its port is not a number"),
        ("postgresql://me:s3cret@[::1/app", "its port is not a number"),
        ("post gres://me:s3cret@127.0.0.1/app", "it cannot be read as one"),
    ],
)
def test_a_malformed_url_is_refused_without_its_password(url: str, problem: str) -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        TestDatabase(url)
    assert f"is not a database URL: {problem}." in str(caught.value)
    assert "me:***@" in str(caught.value)
    assert caught.value.__cause__ is None  # a chained error would print the URL
    assert caught.value.__suppress_context__
    assert "s3cret" not in str(caught.value)


async def test_a_database_harness_did_not_create_is_refused_before_the_template_is_built(
    server_url: str, admin: AsyncConnection
) -> None:
    built: list[str] = []
    database = TestDatabase(server_url, name="someone_elses", schema=lambda connection: built.append("built"))
    await admin.execute(text(f'CREATE DATABASE "{database.name}"'))
    try:
        with pytest.raises(
            UnsafeDatabaseError,
            match=rf"^Database '{database.name}' exists on the server but was not created by harness",
        ):
            await database.create()
        assert built == []
        assert database.template_name not in await database_names(admin)
        # nor does the isolation probe write its scratch table there
        engine = create_async_engine(server_url.rsplit("/", 1)[0] + f"/{database.name}", poolclass=NullPool)
        trust(engine)
        with pytest.raises(
            UnsafeDatabaseError,
            match=r"probe_isolation\(\) writes a scratch table, and .* is a database harness did not create",
        ):
            await probe_isolation(engine)
        await engine.dispose()
    finally:
        await admin.execute(text(f'DROP DATABASE "{database.name}"'))


async def test_the_probe_refuses_a_sqlite_file_harness_did_not_create(tmp_path: Path) -> None:
    foreign = tmp_path / "test_kept.db"
    with contextlib.closing(sqlite3.connect(foreign)) as connection:
        connection.execute("CREATE TABLE precious (id INTEGER)")
        connection.commit()
    engine = create_test_engine(f"sqlite+aiosqlite:///{foreign}")
    with pytest.raises(UnsafeDatabaseError, match="is a database harness did not create"):
        await probe_isolation(engine)
    await engine.dispose()
    fresh = create_test_engine(f"sqlite+aiosqlite:///{tmp_path / 'test_new.db'}")
    await probe_isolation(fresh)  # a new file is fine
    await fresh.dispose()


async def test_a_server_that_never_answers_is_named_with_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_module, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as listener:  # accepts connections, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(
            DatabaseUnavailableError, match=rf"server at 127\.0\.0\.1:{port} \(no answer within 0\.5 s\)"
        ):
            await TestDatabase(f"postgresql://postgres@127.0.0.1:{port}/app").create()


async def test_a_missing_unix_socket_is_named_as_the_socket() -> None:
    with pytest.raises(
        DatabaseUnavailableError,
        match=r"server at the Unix socket /nonexistent/dir/\.s\.PGSQL\.5433 \(FileNotFoundError",
    ):
        await TestDatabase("postgresql://postgres@/app?host=/nonexistent/dir&port=5433").create()


async def test_a_connection_lost_while_building_says_so_not_fix_the_schema(
    server_url: str, on_postgres: bool
) -> None:
    if not on_postgres:
        pytest.skip("a SQLite file has no server to lose")

    async def killed(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    database = TestDatabase(server_url, name="killed", schema=killed)
    with pytest.raises(DatabaseUnavailableError) as caught:
        await database.create()
    # asyncpg 0.30 words the server's goodbye as a closed connection.
    reason = "(terminating connection due to administrator command|connection was closed in the middle of operation)"
    assert re.fullmatch(
        re.escape(
            "The connection to the database server broke while building the schema of test database "
            f"{database.template_name!r} ("
        )
        + "(DBAPIError|OperationalError): "  # asyncpg's, under SQLAlchemy's adapter; psycopg's own
        + reason
        + re.escape("). Is the server still running?"),
        str(caught.value),
    )
    await database.drop()


async def test_a_worker_leaves_the_sqlite_template_to_the_others(tmp_path: Path) -> None:
    """Under xdist a worker that finishes first must not delete the template another still copies."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    first, second = (
        TestDatabase(url, name="shared", worker=worker, schema=Base.metadata, run_id="one-run")
        for worker in ("gw0", "gw1")
    )
    await first.create()
    await first.drop(template=False)  # what the plugin does in a worker
    assert (tmp_path / "test_shared_template.sqlite3").exists()
    await second.create()
    await second.drop()  # the run's end
    assert not list(tmp_path.glob("test_shared*"))


async def test_only_databases_no_live_run_holds_are_left_behind_and_dropped(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run holds a lease on its database until it drops it; what a killed run left is listed and,
    on request, dropped; a live run's database and one harness did not make are never touched."""
    live = TestDatabase(server_url, schema=Base.metadata, name="leases", run_id="live")
    killed = TestDatabase(server_url, schema=Base.metadata, name="leases", run_id="killed")
    await live.create()
    await killed.create()
    killed._end_lease()  # as its process's end would, without a drop
    postgres = live.is_postgres
    where = server_url if postgres else str(tmp_path)
    if postgres:
        found = {each.name: each.state for each in await left_behind(server_url)}
    else:
        (tmp_path / "test_leases_mine.sqlite3").write_bytes(b"precious")  # no harness marker
        found = {each.name.removesuffix(".sqlite3"): each.state for each in sqlite_left_behind(tmp_path)}
    assert {name: found.get(name) for name in (live.name, killed.name, live.template_name)} == {
        live.name: "in use",
        killed.name: "left by a run that ended",
        live.template_name: "template",
    }
    assert "test_leases_mine" not in found

    assert await asyncio.to_thread(harness_db_main, [where, "--drop"]) == 0  # it runs its own loop
    printed = dict(
        line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines() if "test_leases" in line
    )
    suffix = "" if postgres else ".sqlite3"
    assert printed[killed.name + suffix] == "dropped"
    assert printed[live.template_name + suffix] == "template"  # dropped only with --templates
    assert printed[live.name + suffix] == "in use"
    async with live.engine.connect() as connection:  # type: ignore[union-attr]  # the live run goes on
        assert await connection.scalar(text("SELECT count(*) FROM campaigns")) == 0
    await live.drop()
    if not postgres:
        assert (tmp_path / "test_leases_mine.sqlite3").read_bytes() == b"precious"


async def test_the_clean_up_skips_what_may_still_be_used_and_says_why(server_url: str) -> None:
    """A left database with a connection open to it (maybe a live run whose lease connection broke)
    and a template a run is building or cloning are skipped, with the reason, never forced."""
    killed = TestDatabase(server_url, schema=Base.metadata, name="skips", run_id="killed")
    await killed.create()
    if not killed.is_postgres:
        await killed.drop()
        pytest.skip("connections and advisory locks are PostgreSQL's; SQLite's file locks are tested above")
    killed._end_lease()
    try:
        async with killed.engine.connect():  # type: ignore[union-attr]  # someone still connected
            found = {each.name: each.state for each in await left_behind(server_url, drop=True)}
        assert found[killed.name] == "skipped: 1 connection(s) open to it"
        await killed.engine.dispose()  # type: ignore[union-attr]  # its pooled connection closes
        async with admin_module.AdminConnection(killed.server_url, False) as admin:
            await admin.execute(
                text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": killed.template_name}
            )
            found = {
                each.name: each.state for each in await left_behind(server_url, drop=True, templates=True)
            }
        assert found[killed.template_name] == "skipped: a run is building or cloning it"
        assert found[killed.name] == "dropped"  # no connection open any more
    finally:
        await killed.drop()  # and the template


def test_the_clean_up_command_says_when_there_is_nothing_and_fails_on_a_bad_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty folder says so (status 0); a server harness refuses to touch is an error (status 2)."""
    assert harness_db_main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == "harness.db: no test databases of harness's here\n"
    assert harness_db_main(["postgresql://u:secret@db.example.com/app"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("harness.db: Refusing to use database server 'db.example.com'")
    assert "secret" not in said


async def test_two_databases_with_one_name_and_run_are_refused_not_shared(server_url: str) -> None:
    """Under pytest-xdist without a worker name, every worker would take the same database: the
    second is refused with the fix, instead of waiting on or dropping the first's."""
    first = TestDatabase(server_url, schema=Base.metadata, name="twice", run_id="same")
    await first.create()
    try:
        with pytest.raises(DatabaseConfigError) as excinfo:
            await TestDatabase(server_url, schema=Base.metadata, name="twice", run_id="same").create()
        assert str(excinfo.value).startswith(
            f"Test database '{first.name + ('' if first.is_postgres else '.sqlite3')}' is held by another "
            "process right now: two TestDatabase objects got the same name and run id. Under pytest-xdist give "
            "each worker its own (TestDatabase(..., worker=os.environ.get('PYTEST_XDIST_WORKER'))), or a run_id "
            "of its own."
        )
        async with first.engine.connect() as connection:  # type: ignore[union-attr]  # the first goes on
            assert await connection.scalar(text("SELECT count(*) FROM campaigns")) == 0
    finally:
        await first.drop()
