"""The app's own engines join the test: what the app commits is the test's, and nothing else is reached.

Every test here runs on three backends: a SQLite file, in-memory SQLite, and PostgreSQL (when the
run has a server: --harness-database-url). The "app" is what most FastAPI projects look like: an
engine built at import time on the development database, a sessionmaker on it, a dependency that
commits after ``yield``, a lifespan that runs ``create_all``. harness adopts the engine; the
development database must never be touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, event, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError, UnboundExecutionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from harness import (
    AppLifespan,
    DatabaseBlockedError,
    IsolationError,
    LifespanError,
    ScopeError,
    TestDatabase,
    adopt_engines,
    app_client,
    bind_sessions,
    block_databases,
    create_test_engine,
    rollback_scope,
)
from harness.db import commit_scope, resolve_engine
from harness.db.engines import is_write
from harness.exceptions import DatabaseConfigError
from tests.models import Base, Campaign

# How harness shows this file in a location: relative to the working directory, as pytest does.
HERE = __file__.removeprefix(os.getcwd() + os.sep)

BACKENDS = ["sqlite-file", "sqlite-memory", "postgres"]


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, harness_database: TestDatabase) -> AsyncEngine:
    """A test engine on each backend; the run's own database where it is of that kind."""
    kind = request.param
    if kind == "postgres" and not harness_database.is_postgres:
        pytest.skip("PostgreSQL runs with --harness-database-url")
    run_has_it = (kind == "postgres") == harness_database.is_postgres and kind != "sqlite-memory"
    engine: AsyncEngine = request.getfixturevalue("db_engine" if run_has_it else "_own_database")
    return engine


@pytest.fixture
async def _own_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    memory = request.node.callspec.params["engine"] == "sqlite-memory"
    database = TestDatabase(
        "sqlite+aiosqlite://" if memory else f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        schema=Base.metadata,
    )
    try:
        yield await database.create()
    finally:
        await database.drop()


class App:
    """A FastAPI app shaped like most projects: its engine on the development database, built at import."""

    def __init__(self, dev_path: Path) -> None:
        self.dev_path = dev_path
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{dev_path}")
        self.SessionLocal = async_sessionmaker(self.engine, expire_on_commit=False)
        self.fastapi = FastAPI(lifespan=self.lifespan)
        maker = self.SessionLocal

        async def get_db() -> AsyncIterator[AsyncSession]:
            async with maker() as session:
                yield session
                await session.commit()  # unit of work per request: the endpoints only flush

        @self.fastapi.post("/campaigns")
        async def create(name: str, db: AsyncSession = Depends(get_db)) -> dict[str, int]:  # noqa: B008
            campaign = Campaign(name=name)
            db.add(campaign)
            await db.flush()
            return {"id": campaign.id}

        @self.fastapi.post("/campaigns/direct")
        async def create_directly(name: str) -> dict[str, str]:
            async with self.engine.begin() as connection:  # no session at all
                await connection.execute(insert(Campaign).values(name=name))
            return {"name": name}

        @self.fastapi.post("/campaigns/{campaign_id}/rename")
        async def rename(campaign_id: int, name: str, db: AsyncSession = Depends(get_db)) -> dict[str, str]:  # noqa: B008
            await db.execute(update(Campaign).where(Campaign.id == campaign_id).values(name=name))
            return {"name": name}

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        async with self.engine.begin() as connection:  # the tutorials' create_all at start-up
            await connection.run_sync(Base.metadata.create_all)
        yield
        await self.engine.dispose()


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path / "development.db")


async def count(engine: AsyncEngine) -> int:
    """Campaigns, read on a fresh connection outside any scope."""
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(Campaign))).scalar_one())


# -- 1. A dependency that commits after yield keeps its writes ----------------------------------------


async def test_a_dependency_that_commits_after_yield_keeps_its_writes(engine: AsyncEngine, app: App) -> None:
    """The app's own get_db runs unchanged: its commit after yield reaches the test's transaction."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session, app_client(app.fastapi) as client:
            response = await client.post("/campaigns", params={"name": "January"})
            assert response.status_code == 200
            assert await session.scalar(select(func.count()).select_from(Campaign)) == 1
            assert (await session.get(Campaign, response.json()["id"])) is not None
    assert await count(engine) == 0
    assert not app.dev_path.exists()


async def test_a_bound_sessionmaker_keeps_the_dependencys_commit(engine: AsyncEngine, app: App) -> None:
    """Binding the sessionmaker (not the engine) is as faithful: get_db's commit lands in the test."""
    unbound = async_sessionmaker(expire_on_commit=False)
    app.SessionLocal.configure(bind=None)
    async with rollback_scope(engine) as session:
        with bind_sessions(session, app.SessionLocal, unbound):
            async with app_client(app.fastapi, lifespan=False) as client:
                response = await client.post("/campaigns", params={"name": "February"})
            async with unbound() as other:
                other.add(Campaign(name="March"))
                await other.commit()
        assert response.status_code == 200
        assert await session.scalar(select(func.count()).select_from(Campaign)) == 2
    assert unbound.kw.get("bind") is None
    assert await count(engine) == 0


# -- 2. The development database is never written ------------------------------------------------------


async def test_the_lifespan_runs_on_the_test_database(engine: AsyncEngine, app: App) -> None:
    """The lifespan's create_all and dispose() run on the adopted engine; the dev file is never created."""
    with adopt_engines(app.engine, test_engine=engine):
        for _ in range(2):  # dispose() at shut-down does not close the test engine's connections
            async with rollback_scope(engine), app_client(app.fastapi) as client:
                assert (await client.post("/campaigns", params={"name": "x"})).status_code == 200
    assert not app.dev_path.exists()
    assert await count(engine) == 0


async def test_an_engine_harness_did_not_adopt_is_refused_before_it_connects(
    engine: AsyncEngine, app: App
) -> None:
    """Without adoption the app's lifespan is refused, naming the database and where its engine was made."""
    with block_databases(), pytest.raises(LifespanError) as excinfo:
        async with rollback_scope(engine), app_client(app.fastapi):
            pass
    assert isinstance(excinfo.value.__cause__, DatabaseBlockedError)
    message = str(excinfo.value.__cause__)
    assert message.startswith(
        f"Refusing a connection to sqlite+aiosqlite:///{app.dev_path} from an engine created at {HERE}:"
    )
    assert "in __init__: while tests run, harness lets code reach only the databases it created" in message
    assert "- If this is the app's engine, adopt it: harness_engines = app.db:engine" in message
    assert "- If the test really needs this database, mark it @pytest.mark.allow_database(" in message
    assert not app.dev_path.exists()  # refused before the driver created the file


async def test_a_swallowed_refusal_is_reported(app: App) -> None:
    """Code that catches the refusal does not hide it: the guard lists it."""
    with block_databases() as guard:
        with contextlib.suppress(Exception):
            async with app.engine.connect():
                pass
        with pytest.raises(DatabaseBlockedError) as excinfo:
            guard.assert_nothing_blocked()
    assert str(excinfo.value).startswith(
        "harness refused connections to databases it did not create, which the code under test may have hidden "
        f"with `except Exception`:\n- sqlite+aiosqlite:///{app.dev_path}\n"
    )


async def test_allowed_and_in_memory_databases_pass_the_guard(app: App, tmp_path: Path) -> None:
    """allow= names a database the code may reach; an in-memory one can hurt nothing."""
    with block_databases(allow=[app.dev_path.name]):
        async with app.engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    memory = create_async_engine("sqlite+aiosqlite://")
    with block_databases():
        async with memory.connect() as connection:
            assert (await connection.execute(text("SELECT 2"))).scalar_one() == 2
    await memory.dispose()
    await app.engine.dispose()


# -- 3. Escapes through the app's engine --------------------------------------------------------------


async def test_direct_use_of_the_apps_engine_joins_the_test(engine: AsyncEngine, app: App) -> None:
    """async with engine.begin() in the app is a savepoint of the test's transaction, gone after it."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session, app_client(app.fastapi) as client:
            await client.post("/campaigns/direct", params={"name": "direct"})
            assert (await session.scalars(select(Campaign.name))).all() == ["direct"]
    assert await count(engine) == 0


async def test_an_engine_of_its_own_on_the_test_database_is_refused(engine: AsyncEngine) -> None:
    """A second engine on the test database would not join the transaction (and would wait on its locks)."""
    if engine.url.database in (None, "", ":memory:"):
        pytest.skip("every in-memory engine has a database of its own")
    own = create_async_engine(engine.url)
    try:
        with block_databases(), pytest.raises(DatabaseBlockedError) as excinfo:
            async with rollback_scope(engine), own.connect():
                pass
    finally:
        await own.dispose()
    shown = engine.url.render_as_string(hide_password=True)
    assert str(excinfo.value).startswith(
        f"Refusing a connection to harness's test database {shown} from an engine created at {HERE}:"
    )
    assert (
        "harness did not adopt that engine, so its connection would not join the test's transaction"
        in str(excinfo.value)
    )


async def test_the_test_database_bounds_lock_waits_for_any_connection(engine: AsyncEngine) -> None:
    """On PostgreSQL the test database itself sets lock_timeout: no connection to it can wait forever."""
    if engine.dialect.name != "postgresql":
        pytest.skip("lock_timeout is a PostgreSQL setting")
    plain = create_async_engine(engine.url)  # not harness's: no timeouts of its own
    try:
        with block_databases(allow=["*"]):
            async with plain.connect() as connection:
                assert (await connection.execute(text("SHOW lock_timeout"))).scalar_one() == "10s"
    finally:
        await plain.dispose()


async def test_the_adopted_engine_outside_a_scope_is_refused(engine: AsyncEngine, app: App) -> None:
    """Outside any scope the adopted engine's writes would outlive the test: refused with the fix."""
    with adopt_engines(app.engine, test_engine=engine), pytest.raises(ScopeError) as excinfo:
        async with app.engine.begin() as connection:
            await connection.execute(insert(Campaign).values(name="escaped"))
    assert str(excinfo.value).startswith(
        f"The app's engine on 'sqlite+aiosqlite:///{app.dev_path}' (adopted by harness: it works on the test "
        f"database) was used at {HERE}:"
    )
    assert "Give the test a scope: ask for db_session (or app_client)" in str(excinfo.value)
    assert await count(engine) == 0


async def test_a_scope_on_the_apps_own_sessionmaker_works_on_the_test_database(
    engine: AsyncEngine, app: App
) -> None:
    """rollback_scope(app.SessionLocal): the app's sessionmaker, bound to its adopted engine, gives
    the scope its engine and settings; the scope's rows vanish and the app's database is untouched."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(app.SessionLocal) as session:
            session.add(Campaign(name="spring"))
            await session.commit()
            assert await session.scalar(select(func.count()).select_from(Campaign)) == 1
            assert session.sync_session.expire_on_commit is False  # the app's setting
        assert await count(engine) == 0
    assert not app.dev_path.exists()


async def test_autocommit_on_a_joined_connection_is_refused(engine: AsyncEngine) -> None:
    """AUTOCOMMIT would commit each statement past the rollback: refused, pointing at real commits."""
    async with rollback_scope(engine):
        with pytest.raises(IsolationError) as excinfo:
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
    assert re.fullmatch(
        re.escape(f"Code at {HERE}:")
        + r"\d+"
        + re.escape(
            " in test_autocommit_on_a_joined_connection_is_refused asked for isolation_level='AUTOCOMMIT' inside "
            "the test's transaction: each of its statements would commit at once, past the rollback. harness "
            "refused it. Test such code with real commits (harness.RealCommitsTest, or harness.commit_scope())."
        ),
        str(excinfo.value),
    )
    assert await count(engine) == 0


async def test_a_connection_kept_beyond_its_scope_is_refused(engine: AsyncEngine) -> None:
    """A connection that outlives the test's scope cannot run statements outside the test's transaction."""
    async with rollback_scope(engine):
        kept = await engine.connect()
        await kept.execute(select(1))
    with pytest.raises(StatementError) as excinfo:  # SQLAlchemy wraps what fails while it executes
        await kept.execute(insert(Campaign).values(name="after the test"))
    assert isinstance(excinfo.value.orig, ScopeError)
    assert str(excinfo.value.orig).startswith(
        "A database connection of a test was used after the test's rollback scope ended (a session, "
        "connection or background task kept beyond the test). Its statements would run outside the "
        "test's transaction: harness refused them. Close sessions and await tasks before the test ends."
    )
    await kept.close()
    assert await count(engine) == 0


# -- 4. A forgotten bind ------------------------------------------------------------------------------


async def test_an_unbound_sessionmaker_fails_as_sqlalchemy_says(engine: AsyncEngine) -> None:
    """The raw error stays SQLAlchemy's; the plugin adds what to bind (tests/plugin/test_adoption_plugin.py)."""
    unbound = async_sessionmaker()
    async with rollback_scope(engine):
        with pytest.raises(UnboundExecutionError):
            async with unbound() as session:
                await session.execute(select(Campaign))


# -- 5. Refusals never destroy the database ---------------------------------------------------------


async def test_refused_escapes_leave_the_database_and_its_schema(engine: AsyncEngine, app: App) -> None:
    """A stopped commit and a refused escape do not close the scope's connection: the next test has its tables."""
    with pytest.raises(IsolationError, match=r"^The test's outer transaction was committed at "):
        async with rollback_scope(engine) as session:
            session.add(Campaign(name="stopped"))
            await session.flush()
            await (await session.connection()).commit()
    with pytest.raises(IsolationError, match=r"^Raw SQL 'COMMIT' at "):
        async with rollback_scope(engine) as session:
            with contextlib.suppress(IsolationError):
                await session.execute(text("COMMIT"))
    with block_databases(), pytest.raises(DatabaseBlockedError):
        async with rollback_scope(engine), app.engine.connect():
            pass
    async with rollback_scope(engine) as session:
        session.add(Campaign(name="next test"))
        await session.flush()
        assert await session.scalar(select(func.count()).select_from(Campaign)) == 1
    assert await count(engine) == 0


# -- 6. Adopting the engine an app already built -----------------------------------------------------


async def test_an_engine_is_adopted_by_its_module_path_and_restored(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'module:attribute' names the app's engine; leaving the block gives the app its own engine back."""
    (tmp_path / "adopted_app").mkdir()
    (tmp_path / "adopted_app" / "__init__.py").write_text("")
    (tmp_path / "adopted_app" / "db.py").write_text(
        textwrap.dedent(
            f"""
            from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

            engine = create_async_engine("sqlite+aiosqlite:///{tmp_path / "dev.db"}")
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "adopted_app.db", raising=False)
    app_engine = resolve_engine("adopted_app.db:engine")
    own = app_engine.sync_engine
    with adopt_engines("adopted_app.db:engine", test_engine=engine):
        assert app_engine.url == engine.url
        from adopted_app.db import SessionLocal  # type: ignore[import-not-found]

        async with rollback_scope(engine) as session:
            async with SessionLocal() as app_session:
                app_session.add(Campaign(name="by path"))
                await app_session.commit()
            assert (await session.scalars(select(Campaign.name))).all() == ["by path"]
    assert app_engine.sync_engine is own
    assert await count(engine) == 0
    assert not (tmp_path / "dev.db").exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("adopted_nowhere", "'adopted_nowhere' does not name an engine: write 'package.module:attribute'"),
        (
            "json:loads",
            "'json:loads' is function, not an AsyncEngine: harness adopts the app's async engines.",
        ),
        ("json:engine", "'json' has no attribute 'engine', so there is no engine at 'json:engine'."),
        ("no_such_module_here:engine", "Cannot import 'no_such_module_here' to find the engine"),
    ],
)
def test_a_path_that_names_no_engine_says_why(path: str, message: str) -> None:
    """Each way a path can miss gets its own message."""
    with pytest.raises(DatabaseConfigError, match=f"^{re.escape(message)}"):
        resolve_engine(path)


# -- What production's commit would reject --------------------------------------------------------------


def deferred_tables() -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    parent = Table("deferred_parents", metadata, Column("id", Integer, primary_key=True))
    child = Table(
        "deferred_children",
        metadata,
        Column("id", Integer, primary_key=True),
        Column(
            "parent_id", Integer, ForeignKey("deferred_parents.id", deferrable=True, initially="DEFERRED")
        ),
    )
    return metadata, parent, child


async def test_a_commit_checks_deferred_constraints_as_production_does(engine: AsyncEngine, app: App) -> None:
    """A deferred foreign key the app's commit violates fails at that commit, and its work is rolled back."""
    metadata, parent, child = deferred_tables()
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session:
            await session.run_sync(lambda s: metadata.create_all(s.connection()))
            async with app.SessionLocal() as app_session:
                await app_session.execute(insert(child).values(id=1, parent_id=99))  # deferred: no error yet
                with pytest.raises(IntegrityError):
                    await app_session.commit()
            async with app.SessionLocal() as app_session:  # the child first, its parent later: fine
                await app_session.execute(insert(child).values(id=2, parent_id=7))
                await app_session.execute(insert(parent).values(id=7))
                await app_session.commit()
            assert (await session.execute(select(child.c.id))).scalars().all() == [2]


async def test_commit_hooks_fire_as_in_production(engine: AsyncEngine, app: App) -> None:
    """Session after_commit and Connection commit listeners of the app see its commits, not its rollbacks."""
    seen: list[str] = []

    def after_commit(_session: Session) -> None:
        seen.append("session committed")

    event.listen(app.SessionLocal.class_.sync_session_class, "after_commit", after_commit)
    try:
        with adopt_engines(app.engine, test_engine=engine):
            event.listen(app.engine.sync_engine, "commit", lambda _c: seen.append("connection committed"))
            async with rollback_scope(engine):
                async with app.SessionLocal() as app_session:
                    app_session.add(Campaign(name="hooked"))
                    await app_session.commit()
                async with app.SessionLocal() as app_session:
                    app_session.add(Campaign(name="rolled back"))
                    await app_session.rollback()
    finally:
        event.remove(app.SessionLocal.class_.sync_session_class, "after_commit", after_commit)
    assert seen == ["connection committed", "session committed"]


# -- Stale objects --------------------------------------------------------------------------------


@pytest.mark.parametrize("populate_existing", [False, True])
async def test_populate_existing_shows_what_the_app_changed(
    engine: AsyncEngine, app: App, populate_existing: bool
) -> None:
    """The test's session keeps its objects as loaded unless asked to refresh them on every query."""
    with adopt_engines(app.engine, test_engine=engine):
        async with (
            rollback_scope(engine, populate_existing=populate_existing) as session,
            app_client(app.fastapi) as client,
        ):
            campaign = Campaign(name="old")
            session.add(campaign)
            await session.commit()
            await client.post(f"/campaigns/{campaign.id}/rename", params={"name": "new"})
            reloaded = await session.scalar(select(Campaign).where(Campaign.id == campaign.id))
            assert reloaded is campaign
            assert campaign.name == ("new" if populate_existing else "old")


# -- Sessions overlapping on the shared connection ---------------------------------------------------


async def test_concurrent_requests_get_the_clear_error(engine: AsyncEngine, app: App) -> None:
    """asyncio.gather over requests shares one connection: ConcurrentSessionError, with real commits as the fix."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine), app_client(app.fastapi) as client:

            async def post(name: str) -> Any:
                async with app.SessionLocal() as app_session:
                    app_session.add(Campaign(name=name))
                    await app_session.flush()
                    await asyncio.sleep(0)
                    await app_session.commit()

            with pytest.raises(IsolationError, match="Two sessions used the test's connection"):
                await asyncio.gather(post("a"), post("b"))
            del client
    assert await count(engine) == 0


def test_adopt_engines_refuses_what_is_not_an_engine(engine: AsyncEngine) -> None:
    """adopt_engines takes AsyncEngines or paths; its test engine is an AsyncEngine."""
    with pytest.raises(TypeError) as excinfo:
        adopt_engines(42, test_engine=engine)  # type: ignore[arg-type]
    assert excinfo.value.args == (
        "adopt_engines() takes the app's AsyncEngine objects or 'module:attribute' paths to them, got 42.",
    )
    with (
        pytest.raises(DatabaseConfigError) as config_error,
        adopt_engines(create_async_engine("sqlite+aiosqlite://"), test_engine=engine.sync_engine),
    ):  # type: ignore[arg-type]
        pass
    assert str(config_error.value).startswith(
        "The test engine must be an AsyncEngine harness made (harness.create_test_engine(), TestDatabase.engine, "
        f"or the db_engine fixture), got Engine({engine.url!r})."
    )


async def test_an_engine_adopted_by_another_test_engine_is_refused(engine: AsyncEngine, app: App) -> None:
    """One app engine cannot work on two test databases at once; the same one again is a no-op."""
    other = create_test_engine("sqlite+aiosqlite://")
    try:
        with adopt_engines(app.engine, test_engine=engine):
            with adopt_engines(app.engine, test_engine=engine):  # nested, same test engine: nothing to do
                pass
            assert app.engine.url == engine.url  # the inner exit did not undo the outer adoption
            with pytest.raises(ScopeError) as excinfo, adopt_engines(app.engine, test_engine=other):
                pass
        assert str(excinfo.value).startswith(
            f"The app's engine on 'sqlite+aiosqlite:///{app.dev_path}' is already adopted by another test engine"
        )
    finally:
        await other.dispose()


async def test_a_lifespan_starts_once(app: App) -> None:
    """An AppLifespan is run once; a second start-up says to make a new one."""
    lifespan = AppLifespan(FastAPI())
    async with lifespan:
        with pytest.raises(LifespanError) as excinfo:
            await lifespan.startup()
    assert excinfo.value.args == (
        "This lifespan has already started. Make a new AppLifespan(app) to run it again.",
    )


async def test_the_sqlite_deferred_check_names_the_rows(engine: AsyncEngine, app: App) -> None:
    """On SQLite the failed commit says which table's rows point nowhere."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL words its own error")
    metadata, _parent, child = deferred_tables()
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session:
            await session.run_sync(lambda s: metadata.create_all(s.connection()))
            async with app.SessionLocal() as app_session:
                await app_session.execute(insert(child).values(id=1, parent_id=99))
                with pytest.raises(IntegrityError) as excinfo:
                    await app_session.commit()
    assert str(excinfo.value.orig) == (
        "FOREIGN KEY constraint failed: 1 row(s) of deferred_children refer to rows of deferred_parents that do "
        "not exist (first: rowid 1). harness checked the deferred foreign keys at this commit, as SQLite checks "
        "them at COMMIT."
    )


async def test_a_lock_wait_of_an_allowed_engine_gets_harnesss_note(engine: AsyncEngine) -> None:
    """A connection let past the guard that waits on the test's lock fails with the note on the likely cause."""
    if engine.dialect.name != "postgresql":
        pytest.skip("lock_timeout is a PostgreSQL setting")
    plain = create_async_engine(engine.url, poolclass=NullPool)
    try:
        with block_databases(allow=["*"]):
            async with rollback_scope(engine) as session:
                await session.execute(text("LOCK TABLE campaigns IN ACCESS EXCLUSIVE MODE"))
                async with plain.connect() as blocked:
                    await blocked.execute(text("SET lock_timeout = '200ms'"))
                    with pytest.raises(DBAPIError) as excinfo:
                        await blocked.execute(text("SELECT count(*) FROM campaigns"))
    finally:
        await plain.dispose()
    assert any("not part of the test's transaction" in note for note in excinfo.value.__notes__)


# -- Where separate transactions and one test transaction differ -------------------------------------


@pytest.mark.parametrize("level", ["SERIALIZABLE", "AUTOCOMMIT"])
async def test_an_isolation_level_set_on_the_engine_cannot_end_the_test(
    engine: AsyncEngine, app: App, level: str
) -> None:
    """Engine-level execution options reach the driver too: AUTOCOMMIT is refused, other levels ignored."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session:
            session.add(Campaign(name="the test's"))
            await session.commit()
            derived = app.engine.execution_options(isolation_level=level)
            if level == "AUTOCOMMIT":
                with pytest.raises(IsolationError, match=r"asked for isolation_level='AUTOCOMMIT'"):
                    await derived.connect()
            else:
                async with derived.begin() as connection:
                    await connection.execute(insert(Campaign).values(name="the app's"))
            names = (await session.scalars(select(Campaign.name).order_by(Campaign.id))).all()
            assert names == (["the test's"] if level == "AUTOCOMMIT" else ["the test's", "the app's"])
    assert await count(engine) == 0


async def test_an_engine_derived_from_an_adopted_one_keeps_its_rules(engine: AsyncEngine, app: App) -> None:
    """engine.execution_options(...) of an adopted engine is refused outside a scope, as the engine is."""
    with adopt_engines(app.engine, test_engine=engine):
        derived = app.engine.execution_options(logging_token="worker")
        with pytest.raises(
            ScopeError, match=r"\(adopted by harness: it works on the test database\) was used at"
        ):
            async with derived.begin() as connection:
                await connection.execute(insert(Campaign).values(name="escaped"))
        await derived.dispose()  # does nothing: the connections are the test engine's
        async with rollback_scope(engine) as session:
            async with derived.begin() as connection:
                await connection.execute(insert(Campaign).values(name="joined"))
            assert await session.scalar(select(Campaign.name)) == "joined"
    assert await count(engine) == 0


async def test_a_connection_kept_past_a_tests_nested_scope_is_refused(engine: AsyncEngine, app: App) -> None:
    """With class data, a connection the app keeps after one test's scope cannot write into the class's data."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as class_session:
            class_session.add(Campaign(name="class data"))
            await class_session.flush()
            async with rollback_scope(class_session):
                kept = await app.engine.connect()
                await kept.execute(select(1))
            with pytest.raises(StatementError) as excinfo:
                await kept.execute(insert(Campaign).values(name="after the test"))
            assert isinstance(excinfo.value.orig, ScopeError)
            await kept.close()
            assert (await class_session.scalars(select(Campaign.name))).all() == ["class data"]
    assert await count(engine) == 0


async def test_a_class_scope_refuses_connections_between_its_tests(engine: AsyncEngine, app: App) -> None:
    """Once a class's data is made, a connection opened between its tests is refused, naming the fix."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as class_session:
            scope = class_session.info["harness.scope"]
            scope.accepts_connections = False  # what IntegrationTest does after setup_class_data
            async with rollback_scope(class_session), app.engine.begin() as connection:  # inside a test: fine
                await connection.execute(insert(Campaign).values(name="in a test"))
            with pytest.raises(ScopeError) as excinfo:
                await app.engine.connect()
    assert re.fullmatch(
        re.escape(f"A database connection was opened at {HERE}:")
        + r"\d+"
        + re.escape(
            " in test_a_class_scope_refuses_connections_between_its_tests between the tests of a class whose data "
            "lives in a rollback scope: what it wrote would become part of the class's data for the tests that "
            "follow. Open connections inside a test (or in setup_class_data), and stop background work at the "
            "end of each test."
        ),
        str(excinfo.value),
    )
    assert await count(engine) == 0


async def test_a_commit_inside_a_reading_transaction_stands(engine: AsyncEngine, app: App) -> None:
    """get_db reads, a service commits in a session of its own, get_db closes without committing: the commit stands."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session:
            async with app.SessionLocal() as request_session:
                await request_session.scalar(
                    select(func.count()).select_from(Campaign)
                )  # opens its transaction
                async with app.SessionLocal.begin() as service_session:
                    service_session.add(Campaign(name="committed by the service"))
            assert (await session.scalars(select(Campaign.name))).all() == ["committed by the service"]
    assert await count(engine) == 0


async def test_a_writing_transaction_cannot_roll_back_a_commit_made_inside_it(
    engine: AsyncEngine, app: App
) -> None:
    """When the outer transaction also wrote, one test transaction cannot keep the inner commit: refused."""
    with adopt_engines(app.engine, test_engine=engine), pytest.raises(IsolationError) as excinfo:
        async with rollback_scope(engine), app.SessionLocal() as request_session:
            request_session.add(Campaign(name="written by the request"))
            await request_session.flush()
            async with app.SessionLocal.begin() as service_session:
                service_session.add(Campaign(name="committed by the service"))
    assert re.fullmatch(
        re.escape(f"A transaction that wrote at {HERE}:")
        + r"\d+"
        + re.escape(
            " in test_a_writing_transaction_cannot_roll_back_a_commit_made_inside_it rolled back after another "
            "connection committed inside it. In production they are separate transactions and the other commit "
            "would stand; in the test's one transaction the rollback would take it too. harness stopped it: end "
            "the first transaction (commit or roll back) before the other one begins, or test this with real "
            "commits (harness.RealCommitsTest)."
        ),
        str(excinfo.value),
    )
    assert await count(engine) == 0


async def test_uncommitted_writes_left_open_fail_the_test(engine: AsyncEngine, app: App) -> None:
    """A session that wrote and was never committed nor closed: the test saw rows production would not."""
    with adopt_engines(app.engine, test_engine=engine):
        with pytest.raises(IsolationError) as excinfo:
            async with rollback_scope(engine):
                forgotten = app.SessionLocal()
                await forgotten.execute(insert(Campaign).values(name="never committed"))
        await forgotten.close()
    assert re.fullmatch(
        re.escape(f"Code wrote at {HERE}:")
        + r"\d+"
        + re.escape(
            " in test_uncommitted_writes_left_open_fail_the_test and never committed: its transaction was still "
            "open when the test's scope ended. The test could read those rows, which production would not show "
            "to anyone else. Commit (or roll back, or close) the session or connection before the test ends."
        ),
        str(excinfo.value),
    )
    assert await count(engine) == 0


@pytest.mark.parametrize("end", ["rollback", "commit", "close"])
async def test_ending_a_transaction_with_a_savepoint_still_open_is_fine(
    engine: AsyncEngine, app: App, end: str
) -> None:
    """Connection.rollback()/commit()/close() with begin_nested() open ends both, as on a plain engine."""
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session:
            connection = await app.engine.connect()
            await connection.begin()
            await connection.execute(insert(Campaign).values(name="outer"))
            await connection.begin_nested()
            await connection.execute(insert(Campaign).values(name="inner"))
            await getattr(connection, end)()
            await connection.close()
            expected = ["outer", "inner"] if end == "commit" else []
            assert (await session.scalars(select(Campaign.name).order_by(Campaign.id))).all() == expected
    assert await count(engine) == 0


async def test_a_cancelled_statement_leaves_the_test_usable(engine: AsyncEngine, app: App) -> None:
    """A request timed out mid-statement: its transaction is rolled back and the test goes on."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite statements are not cancelled mid-way")
    with adopt_engines(app.engine, test_engine=engine):
        async with rollback_scope(engine) as session:
            session.add(Campaign(name="the test's"))
            await session.commit()

            async def slow_request() -> None:
                async with app.engine.begin() as connection:
                    await connection.execute(insert(Campaign).values(name="the request's"))
                    await connection.execute(text("SELECT pg_sleep(2)"))

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(slow_request(), 0.3)
            assert (await session.scalars(select(Campaign.name))).all() == ["the test's"]
    assert await count(engine) == 0


async def test_a_commit_scope_inside_a_rollback_scope_is_refused(engine: AsyncEngine) -> None:
    """Its connections would join the rollback scope instead of committing: refused at entry."""
    async with rollback_scope(engine):
        with pytest.raises(ScopeError) as excinfo:
            async with commit_scope(engine):
                pass
    assert excinfo.value.args == (
        "commit_scope() was opened inside a rollback scope of the same engine: its connections would join the "
        "rollback scope's transaction instead of committing. Open it outside any rollback scope "
        "(RealCommitsTest instead of IntegrationTest, or a test without db_session).",
    )


@pytest.mark.parametrize(
    ("statement", "writes"),
    [
        ("SELECT 1", False),
        ("  -- comment\n/* more */ INSERT INTO t VALUES (1)", True),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", False),
        ("PRAGMA table_info(t)", False),
        ("create table t (id int)", True),
    ],
)
def test_what_counts_as_a_write(statement: str, writes: bool) -> None:
    """Writes are told from reads past comments and common table expressions."""
    assert is_write(statement) is writes


@pytest.fixture(autouse=True)
def _no_leftover_adoption(app: App) -> Iterator[None]:
    own = app.engine.sync_engine
    yield
    assert app.engine.sync_engine is own


async def test_the_app_can_share_the_tests_own_session(engine: AsyncEngine, app: App) -> None:
    """share_session=True hands the app the test's session: one identity map, nothing stale, nothing closed."""
    async with rollback_scope(engine) as session:
        campaign = Campaign(name="old")
        session.add(campaign)
        await session.flush()
        async with app_client(
            app.fastapi, session=session, bind=[app.SessionLocal], share_session=True, lifespan=False
        ) as client:
            await client.post(f"/campaigns/{campaign.id}/rename", params={"name": "new"})
            await session.refresh(campaign)  # the same session: the app's UPDATE is in its transaction
            assert campaign.name == "new"
            async with app.SessionLocal.begin() as app_session:  # begin() inside the test's transaction
                assert app_session.sync_session is session.sync_session
                assert await app_session.get(Campaign, campaign.id) is campaign
        assert campaign in session  # the app's close() left the test's session open
    assert app.SessionLocal.class_ is AsyncSession
    assert await count(engine) == 0


def test_sharing_needs_a_sessionmaker_to_share_through(app: App) -> None:
    """share_session without a sessionmaker in bind= has nothing to hand the session to."""
    with pytest.raises(TypeError, match=r"^app_client\(share_session=True\) shares the session through"):
        app_client(app.fastapi, share_session=True)
