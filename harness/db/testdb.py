"""Test databases that harness creates, owns and drops.

PostgreSQL: the schema is built once into ``test_<name>_template`` and every worker gets a clone,
``test_<name>_<run>`` or ``test_<name>_<run>_gw0``…, made with ``CREATE DATABASE … TEMPLATE``, where
``<run>`` is six hex digits unique to the run, so runs sharing a server never meet. SQLite: one file
per worker (or a memory database), named the same way. harness marks what it creates (a database
comment, a marker file next to a SQLite file) and never drops or rebuilds a database without that
mark; a run holds a lease on its databases (`harness.db.leases`) until it drops them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import MetaData, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from harness.db.admin import AdminConnection, server_message
from harness.db.engines import create_test_engine
from harness.db.leases import FILE_LOCKS, FileLease, ServerLease, file_lock, lock_file, remove_sqlite_file
from harness.db.probe import probe_isolation
from harness.db.seed import SeedFunction, plant_seed
from harness.db.urls import HARNESS_MARK, TEST_PREFIX, check_test_database, is_memory, normalize_url
from harness.exceptions import DatabaseConfigError, DatabaseUnavailableError, SchemaError, UnsafeDatabaseError

__all__ = ["Schema", "TestDatabase"]

Schema = MetaData | Callable[[Connection], Any] | Callable[[AsyncConnection], Awaitable[Any]] | None
"""What builds the test schema: a `MetaData` (``create_all``), or a callable that receives the
connection (sync callables, such as an Alembic ``upgrade``, get a sync `Connection`)."""

_MARK = HARNESS_MARK
_NAME = re.compile(r"^[a-z0-9_]+$")
_MAX_NAME = 63  # PostgreSQL's NAMEDATALEN - 1
_LOCK_TIMEOUT = "10s"
# Pool settings that only a pooling pool takes: the schema is built on an unpooled engine.
_POOL_SIZING = ("pool_size", "max_overflow", "pool_timeout", "pool_use_lifo", "poolclass", "pool")
T = TypeVar("T")


def run_aside(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a private event loop in a helper thread: set-up work that
    must not touch (or need) the caller's event loop, running or not."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="harness-setup") as pool:
        return pool.submit(asyncio.run, coroutine).result()


class TestDatabase:
    """A database that harness creates for tests, fills with the schema, and drops afterwards.

    ``url`` names the server (PostgreSQL) or the file (SQLite) the test database is derived from;
    harness never writes to that database itself. The test database is ``test_<name>_<run>``
    where ``name`` defaults to the URL's database name and ``<run>`` is six hex digits of
    ``run_id`` (unique per run, shared by its pytest-xdist workers), with ``_<worker>`` appended
    under pytest-xdist.
    ``schema`` is a `MetaData` or a callable that builds the schema (see `Schema`); ``seed`` is an
    async function that commits rows every test starts from (see `harness.db.seed`), run once with
    the schema, before the database is cloned for the workers.
    ``reuse=True`` keeps the template after `drop` and reuses it, with its schema and seed, next
    time if they did not change; each run still starts from a fresh copy of it, so rows a run
    committed never reach the next. ``recreate=True`` rebuilds the template even then.

    The engine's pooled connections are closed when the event loop they were opened in ends, so
    one database serves a loop per test, per class or per run alike.

    Usage, from async code:

        database = TestDatabase("postgresql://postgres@127.0.0.1/app", schema=Base.metadata)
        engine = await database.create()      # test_app, with the schema
        ...
        await database.drop()

    or from synchronous set-up code (a session fixture, ``setUpModule``, a script):

        with TestDatabase("postgresql://postgres@127.0.0.1/app", schema=Base.metadata) as database:
            ...  # database.engine, in any event loop
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        schema: Schema = None,
        seed: SeedFunction | None = None,
        name: str | None = None,
        worker: str | None = None,
        reuse: bool = False,
        recreate: bool = False,
        allow_remote: bool = False,
        directory: str | Path | None = None,
        engine_options: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        # No URL: a SQLite file per worker in the temporary directory, the embedded default.
        self.server_url = normalize_url(url if url is not None else "sqlite+aiosqlite:///harness.sqlite3")
        self.schema, self.seed = schema, seed
        self.reuse, self.recreate, self.allow_remote = reuse, recreate, allow_remote
        self.engine_options = dict(engine_options or {})
        self.engine: AsyncEngine | None = None
        self.run_id = run_id or os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
        base = name or Path(str(self.server_url.database or "harness")).stem or "harness"
        base = base if base.startswith(TEST_PREFIX) else TEST_PREFIX + base
        run_tag = hashlib.sha256(self.run_id.encode()).hexdigest()[:6]
        self.name = f"{base}_{run_tag}" + (f"_{worker}" if worker else "")
        self.template_name = f"{base}_template"
        self._lease: ServerLease | FileLease | None = None
        if self.is_postgres and not _NAME.match(self.name):
            msg = (
                f"Test database name {base!r} must use only lower-case letters, digits and underscores. "
                "Choose one with harness_database_name in the pytest configuration (TestDatabase(name=...) "
                "without the plugin)."
            )
            raise DatabaseConfigError(msg)
        if self.is_postgres and max(len(self.template_name), len(self.name)) > _MAX_NAME:
            msg = (
                f"Test database name {base!r} is too long: with '_template', or the run and worker "
                f"('{self.name.removeprefix(base)}'), it passes PostgreSQL's {_MAX_NAME}-byte limit. Choose a "
                "shorter one with harness_database_name in the pytest configuration (TestDatabase(name=...) "
                "without the plugin)."
            )
            raise DatabaseConfigError(msg)
        if self.is_memory:
            self.url = self.server_url
        elif self.is_postgres:
            self.url = self.server_url.set(database=self.name)
        else:
            folder = (
                Path(directory)
                if directory
                else (
                    Path(str(self.server_url.database)).parent
                    if url is not None
                    else Path(tempfile.gettempdir()) / "harness"
                )
            )
            self.url = self.server_url.set(database=str(folder / f"{self.name}.sqlite3"))
        check_test_database(self.url, allow_remote=allow_remote)

    @property
    def is_postgres(self) -> bool:
        """Whether the test database lives on a PostgreSQL server."""
        return self.server_url.get_backend_name() == "postgresql"

    @property
    def is_memory(self) -> bool:
        """Whether the test database is an in-memory SQLite database."""
        return is_memory(self.server_url)

    def _fingerprint(self) -> str:
        """A short hash of the schema, stored with the database so that reuse notices changes."""
        if isinstance(self.schema, MetaData):
            dialect = self.server_url.get_dialect()()
            try:
                ddl = [str(CreateTable(t).compile(dialect=dialect)) for t in self.schema.sorted_tables]
                ddl += sorted(
                    str(CreateIndex(i).compile(dialect=dialect))
                    for t in self.schema.sorted_tables
                    for i in t.indexes
                )
            except Exception as exc:  # a model SQLAlchemy cannot turn into DDL: a foreign key to no table
                msg = (
                    f"The models cannot be turned into tables for test database {self.name!r}: "
                    f"{type(exc).__name__}: {exc}. Fix the models (harness_schema returns their MetaData)."
                )
                raise SchemaError(msg) from exc
            source = "\n".join(ddl)
        elif self.schema is None:
            source = "no schema"
        elif isinstance(fingerprint := getattr(self.schema, "schema_fingerprint", None), str):
            source = fingerprint  # AlembicMigrations: its scripts
        else:
            source = _name_and_source(self.schema)
        if self.seed is not None:
            source += "\nseed " + _name_and_source(self.seed)
        return hashlib.sha256(source.encode()).hexdigest()[:16]

    async def create(self) -> AsyncEngine:
        """Create (or reuse) the test database with its schema; return a test engine for it.

        Also runs `probe_isolation` on the new engine, so a driver that leaks fails here. Without
        ``reuse`` the template is rebuilt once per run (``run_id``, shared by pytest-xdist workers).
        """
        if not self.is_memory and self._lease is None:  # held before the database exists
            self._lease = await asyncio.to_thread(self._take_lease)
        try:
            if self.is_postgres:
                await self._create_postgres()
            elif not self.is_memory:
                await self._create_sqlite_file()
            self.engine = create_test_engine(self.url, allow_remote=self.allow_remote, **self.engine_options)
            if self.is_memory:
                await self._build(self.engine, self.name)
            await probe_isolation(self.engine)
            if not self.is_memory:  # pooled connections belong to this event loop; tests bring their own
                await self.engine.dispose()
        except BaseException:
            # Names are unique per run: nothing would replace a database this run made.
            with contextlib.suppress(Exception):
                await self.drop(template=False)
            self._end_lease()
            raise
        return self.engine

    def create_sync(self) -> AsyncEngine:
        """`create` for synchronous code: run on a private event loop in a helper thread, so it
        works before any event loop exists and inside a running one alike (whose thread it blocks
        until the database is ready)."""
        return run_aside(self.create())

    def drop_sync(self, *, template: bool = True) -> None:
        """`drop` for synchronous code, as `create_sync`."""
        run_aside(self.drop(template=template))

    def __enter__(self) -> TestDatabase:
        self.create_sync()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.drop_sync()

    async def __aenter__(self) -> TestDatabase:
        await self.create()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drop()

    async def drop(self, *, template: bool = True) -> None:
        """Dispose the engine, drop the database and end the lease on it; drop the template too
        unless ``reuse`` is set.

        Pooled connections of event loops other than the running one are let go without awaiting
        on their loop (see `harness.db.loops`)."""
        if self.engine is not None:
            await self.engine.dispose()
        if self.is_memory:
            return
        template = template and not self.reuse
        try:
            if self.is_postgres:
                async with self._admin() as admin:
                    await self._drop_owned(admin, self.name)
                    if template:  # not while another run builds or clones it
                        await admin.execute(
                            text("SELECT pg_advisory_lock(hashtext(:n))"), {"n": self.template_name}
                        )
                        await self._drop_owned(admin, self.template_name)
            else:
                remove_sqlite_file(self._sqlite_path)
                if template and FILE_LOCKS:
                    async with file_lock(lock_file(self._template_path)):  # not while a worker copies it
                        remove_sqlite_file(self._template_path)
        finally:
            self._end_lease()

    def _take_lease(self) -> ServerLease | FileLease:
        if self.is_postgres:
            return ServerLease(self.server_url, self.name, allow_remote=self.allow_remote)
        return FileLease(self._sqlite_path)

    def _end_lease(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def unreachable(self, timeout: float = 3.0) -> str | None:
        """Why the PostgreSQL server does not answer a fresh connection now, or None when it does (and
        for SQLite). For a test that failed on a lost connection: a server that died or froze."""
        if not self.is_postgres:
            return None

        async def ask() -> None:
            async with self._admin() as admin:
                await admin.execute(text("SELECT 1"))

        try:
            run_aside(asyncio.wait_for(ask(), timeout))
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except DatabaseUnavailableError as exc:
            return str(exc)
        except Exception as exc:  # the connection opened, then broke
            return f"{type(exc).__name__}: {server_message(exc) if str(exc) else 'no answer'}"
        return None

    async def _build(self, engine: AsyncEngine, name: str) -> None:
        await _build_schema(engine, self.schema, name)
        if self.seed is not None:
            async with engine.begin() as connection:
                await plant_seed(connection, self.seed, name)

    # -- PostgreSQL -------------------------------------------------------------------------------

    def _admin(self) -> AdminConnection:
        return AdminConnection(self.server_url, self.allow_remote)

    async def _create_postgres(self) -> None:
        fingerprint = self._fingerprint()
        async with self._admin() as admin:
            # One builder at a time across xdist workers; the lock ends with the connection.
            await admin.execute(text("SELECT pg_advisory_lock(hashtext(:n))"), {"n": self.template_name})
            for name in (self.name, self.template_name):  # refused before anything is built
                await self._refuse_foreign(admin, name)
            template_mark = await self._mark_of(admin, self.template_name)
            wanted = f"{_MARK}; schema {fingerprint}"
            this_run = f"{wanted}; run {self.run_id}"
            # Rebuild a template that is missing, half-built or of another schema; without reuse (or with
            # recreate) rebuild once per run: the first worker builds, the others find this run's mark.
            fresh_template = not (template_mark or "").startswith(wanted) or (
                (self.recreate or not self.reuse) and template_mark != this_run
            )
            if fresh_template:
                await self._drop_owned(admin, self.template_name)
                await admin.execute(text(f'CREATE DATABASE "{self.template_name}"'))
                await self._mark(admin, self.template_name, "building")  # ours, but not usable yet
                engine = create_test_engine(
                    self.server_url.set(database=self.template_name),
                    allow_remote=self.allow_remote,
                    **_unpooled(self.engine_options),
                )
                try:
                    await self._build(engine, self.template_name)
                except SchemaError:
                    await engine.dispose()
                    await self._drop_owned(admin, self.template_name)
                    raise
                await engine.dispose()
                await self._mark(admin, self.template_name, f"{fingerprint}; run {self.run_id}")
            # Every run starts from a fresh clone, with reuse too: rows that a run committed (a
            # commit_scope killed before its clean-up) would otherwise meet the next run's tests.
            await self._drop_owned(admin, self.name)
            await self._clone(admin)

    async def _clone(self, admin: AsyncConnection) -> None:
        await admin.execute(text(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template_name}"'))
        await self._mark(admin, self.name, self._fingerprint())
        # Whatever connects to the test database, even a connection harness does not know of,
        # waits at most this long on the test's locks instead of hanging.
        await admin.execute(text(f"ALTER DATABASE \"{self.name}\" SET lock_timeout = '{_LOCK_TIMEOUT}'"))

    async def _mark(self, admin: AsyncConnection, name: str, details: str) -> None:
        # details: "building", or the schema fingerprint (and the run that built a template)
        await admin.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{_MARK}; schema {details}'"))

    async def _mark_of(self, admin: AsyncConnection, name: str) -> str | None:
        """The database's harness mark; '' for a database harness did not create; None if absent."""
        row = (
            await admin.execute(
                text(
                    "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = :n"
                ),
                {"n": name},
            )
        ).first()
        return None if row is None else str(row[0])

    async def _drop_owned(self, admin: AsyncConnection, name: str) -> None:
        if await self._refuse_foreign(admin, name):
            await admin.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

    async def _refuse_foreign(self, admin: AsyncConnection, name: str) -> bool:
        """Whether database ``name`` exists; UnsafeDatabaseError if harness did not create it."""
        mark = await self._mark_of(admin, name)
        if mark is None:
            return False
        if not mark.startswith(_MARK):
            msg = (
                f"Database {name!r} exists on the server but was not created by harness, so harness will not drop "
                "or change it. Drop it yourself if it is disposable, or choose another test database name "
                "(TestDatabase(name=...) or the harness_database_name setting)."
            )
            raise UnsafeDatabaseError(msg)
        return True

    # -- SQLite -----------------------------------------------------------------------------------

    @property
    def _sqlite_path(self) -> Path:
        return Path(str(self.url.database))

    @property
    def _template_path(self) -> Path:
        return self._sqlite_path.with_name(f"{self.template_name}.sqlite3")

    async def _create_sqlite_file(self) -> None:
        path, fingerprint = self._sqlite_path, self._fingerprint()
        remove_sqlite_file(path)  # a fresh copy every run, with reuse too (see _create_postgres)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not FILE_LOCKS:  # no file locks to share a template between workers: each builds its own
            await self._build_sqlite_file(path, fingerprint)
            return
        # As on PostgreSQL, the schema (and the seed) is built once per run into a template that
        # each worker copies; the first worker builds, the others wait on the lock.
        template = self._template_path
        async with file_lock(lock_file(template)):
            built = _sqlite_mark(template).get("schema")
            this_run = f"{fingerprint}; run {self.run_id}"
            if built != this_run and not (
                self.reuse and not self.recreate and (built or "").startswith(fingerprint)
            ):
                remove_sqlite_file(template)
                await self._build_sqlite_file(template, this_run)
            _sqlite_mark(path, "building")  # ours, not usable until copied whole
            shutil.copyfile(template, path)  # under the lock: no worker rebuilds or drops it meanwhile
        _sqlite_mark(path, fingerprint)

    async def _build_sqlite_file(self, path: Path, mark: str) -> None:
        _sqlite_mark(path, "building")  # ours, not usable yet
        engine = create_test_engine(self.url.set(database=str(path)), **_unpooled(self.engine_options))
        try:
            await self._build(engine, path.stem)
        except SchemaError:
            await engine.dispose()
            remove_sqlite_file(path)
            raise
        await engine.dispose()
        _sqlite_mark(path, mark)


def _sqlite_mark(path: Path, schema: str | None = None) -> dict[str, str]:
    """Read (or, given ``schema``, write) the marker file that says harness made the SQLite file at ``path``."""
    marker = path.with_name(path.name + ".harness")
    if schema is not None:
        marker.write_text(json.dumps({"mark": _MARK, "schema": schema}))
    return cast(dict[str, str], json.loads(marker.read_text())) if marker.exists() else {}


def _name_and_source(function: Any) -> str:
    """A callable's name and, where Python has it, its source: a change to either rebuilds a reused
    database. Never a repr, whose memory address would differ in every xdist worker."""
    arguments = ""
    while isinstance(function, functools.partial):
        arguments += f"{function.args!r}{sorted(function.keywords.items())!r}"
        function = function.func
    if not inspect.isroutine(function):  # a callable instance: its class says what it does
        function = type(function)
    name = f"{function.__module__}.{function.__qualname__}{arguments}"
    try:
        return f"{name}\n{inspect.getsource(function)}"
    except (OSError, TypeError):
        return name


def _unpooled(options: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in options.items() if k not in _POOL_SIZING}, "poolclass": NullPool}


async def _build_schema(engine: AsyncEngine, schema: Schema, name: str) -> None:
    try:
        async with engine.begin() as connection:
            if isinstance(schema, MetaData):
                await connection.run_sync(schema.create_all)
            elif schema is not None and inspect.iscoroutinefunction(schema):
                await cast(Callable[[AsyncConnection], Awaitable[Any]], schema)(connection)
            elif schema is not None:
                await connection.run_sync(schema)  # type: ignore[arg-type]
    except SchemaError:  # says what failed already (AlembicMigrations' MigrationError)
        raise
    except Exception as exc:
        if isinstance(exc, ConnectionError | TimeoutError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            msg = (
                f"The connection to the database server broke while building the schema of test database "
                f"{name!r} ({type(exc).__name__}: {server_message(exc) if str(exc) else 'no answer'}). "
                "Is the server still running?"
            )
            raise DatabaseUnavailableError(msg) from exc
        what = "create_all" if isinstance(schema, MetaData) else getattr(schema, "__qualname__", repr(schema))
        msg = (
            f"Building the schema of test database {name!r} failed: {what} raised {type(exc).__name__}: {exc}. "
            "Fix the schema callable (or the models); the half-built database was discarded."
        )
        raise SchemaError(msg) from exc
