"""The plugin adopts the app's engines named in harness_engines, and refuses every other database.

Each test runs an inner project (an app package with its engine on a development SQLite file)
on three backends: a SQLite file, in-memory SQLite, and PostgreSQL when the outer run has one.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from harness.db import normalize_url

BACKENDS = ["sqlite-file", "sqlite-memory", "postgres"]

APP_DB = """
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine("sqlite+aiosqlite:///{dev}")
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
    Unbound = async_sessionmaker()  # production binds it at start-up; nothing does in the tests
"""

APP_MODELS = """
    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(String(60))
"""

APP_MAIN = """
    import contextlib

    from fastapi import Depends, FastAPI
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import AsyncSession

    from appdemo.db import SessionLocal, engine
    from appdemo.models import Base, Note

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    async def get_db():
        async with SessionLocal() as session:
            yield session
            await session.commit()  # the endpoints only flush

    @app.post("/notes", status_code=201)
    async def add(text: str, db: AsyncSession = Depends(get_db)):
        db.add(Note(text=text))
        await db.flush()
        return {"ok": True}

    @app.post("/notes/direct", status_code=201)
    async def add_directly(text: str):
        async with engine.begin() as connection:
            await connection.execute(insert(Note).values(text=text))
        return {"ok": True}
"""

CONFTEST = """
    import pytest

    from appdemo.main import app
    from appdemo.models import Base

    @pytest.fixture(scope="session")
    def harness_schema():
        return Base.metadata

    @pytest.fixture
    def harness_app():
        return app
"""


@pytest.fixture(params=BACKENDS)
def project(
    request: pytest.FixtureRequest, harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """An inner project with the app package, on the backend of the parameter."""
    backend = request.param
    server = os.environ.get("HARNESS_DATABASE_URL")
    if backend == "postgres" and not server:
        pytest.skip("PostgreSQL runs with --harness-database-url")
    if backend == "sqlite-memory":
        monkeypatch.setenv("HARNESS_DATABASE_URL", "sqlite+aiosqlite://")
    elif backend == "sqlite-file":
        monkeypatch.setenv("HARNESS_DATABASE_URL", f"sqlite+aiosqlite:///{harness_pytester.path / 'app.db'}")
    dev = harness_pytester.path / "development.db"
    package = harness_pytester.mkpydir("appdemo")
    (package / "db.py").write_text(textwrap.dedent(APP_DB.format(dev=dev)))
    (package / "models.py").write_text(textwrap.dedent(APP_MODELS))
    (package / "main.py").write_text(textwrap.dedent(APP_MAIN))
    harness_pytester.makeconftest(CONFTEST)
    return harness_pytester


def ini_file(pytester: pytest.Pytester) -> Path:
    return next(path for path in (pytester.path / "tox.ini", pytester.path / "pytest.ini") if path.exists())


def add_ini(pytester: pytest.Pytester, *lines: str) -> None:
    ini = ini_file(pytester)
    ini.write_text(ini.read_text().rstrip("\n") + "\n" + "".join(f"{line}\n" for line in lines))


def use_session_loops(pytester: pytest.Pytester) -> None:
    ini = ini_file(pytester)
    text = ini.read_text().replace("asyncio_default_fixture_loop_scope = function", "")
    ini.write_text(text)
    add_ini(
        pytester, "asyncio_default_fixture_loop_scope = session", "asyncio_default_test_loop_scope = session"
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


ADOPTED_TESTS = """
    from sqlalchemy import func, select

    from appdemo.models import Note

    async def count(session):
        return await session.scalar(select(func.count()).select_from(Note))

    async def test_the_apps_commit_after_yield_is_kept(app_client, db_session):
        assert (await app_client.post("/notes", params={"text": "hi"})).status_code == 201
        assert await count(db_session) == 1

    async def test_direct_engine_use_joins_too(app_client, db_session):
        assert (await app_client.post("/notes/direct", params={"text": "hi"})).status_code == 201
        assert await count(db_session) == 1

    async def test_and_both_are_gone(db_session):
        assert await count(db_session) == 0
"""


@pytest.mark.allow_database  # reads the inner run's kept database afterwards
def test_harness_engines_adopts_the_apps_engine(project: pytest.Pytester) -> None:
    """The app's dependency, lifespan and engine run unchanged on the test database; nothing is left behind."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    project.makepyfile(ADOPTED_TESTS)
    run(project, "--harness-reuse-db").assert_outcomes(passed=3)
    assert not (project.path / "development.db").exists()
    url = os.environ["HARNESS_DATABASE_URL"]
    if url.endswith("://"):
        return  # in-memory: nothing outlives the run
    name = ini_file(project).read_text().split("harness_database_name = ")[1].split()[0]
    rows, connections = asyncio.run(leftovers(url, name))
    assert (rows, connections) == (0, 0)


async def leftovers(url: str, name: str) -> tuple[int, int]:
    """Rows of the kept template (--harness-reuse-db) and the connections still open to the run's
    databases, from a fresh connection."""
    if url.startswith("sqlite"):
        target = f"sqlite+aiosqlite:///{Path(url.split('///')[1]).parent / f'test_{name}_template.sqlite3'}"
    else:
        target = url.rsplit("/", 1)[0] + f"/test_{name}_template"
    engine = create_async_engine(normalize_url(target), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT count(*) FROM notes"))).scalar_one()
            connections = 0
            if not url.startswith("sqlite"):
                connections = (
                    await connection.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, :n) "
                            "AND pid <> pg_backend_pid()"
                        ),
                        {"n": f"test_{name}_"},
                    )
                ).scalar_one()
        return int(rows), int(connections)
    finally:
        await engine.dispose()


def test_an_engine_left_out_is_refused_with_the_fix(project: pytest.Pytester) -> None:
    """Without harness_engines, the lifespan's connection to the development database is refused."""
    project.makepyfile(
        """
        async def test_request(app_client):
            await app_client.post("/notes", params={"text": "hi"})
        """
    )
    result = run(project)
    result.assert_outcomes(errors=1)
    dev = project.path / "development.db"
    result.stdout.fnmatch_lines(
        [
            "E * harness.exceptions.LifespanError: The app's lifespan startup failed: DatabaseBlockedError: Refusing a "
            f"connection to sqlite+aiosqlite:///{dev} from an engine created at appdemo/db.py:4 "
            "in <module>: while tests run, harness lets code reach only the databases it created, so that no test "
            "writes to a real one.",
            "E * - If this is the app's engine, adopt it: harness_engines = app.db:engine in the pytest configuration*",
        ]
    )
    assert not dev.exists()


def test_allow_database_lets_one_test_reach_it(project: pytest.Pytester) -> None:
    """The marker is the opt-out for a test that really needs the database."""
    project.makepyfile(
        """
        import pytest
        from sqlalchemy import text

        from appdemo.db import engine

        @pytest.mark.allow_database("development.db")
        async def test_allowed():
            async with engine.connect() as connection:
                assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
            await engine.dispose()

        async def test_not_allowed():
            async with engine.connect():
                pass
        """
    )
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED test_allow_database_lets_one_test_reach_it.py::test_not_allowed - *"]
    )


def test_the_database_guard_can_be_turned_off(project: pytest.Pytester) -> None:
    """harness_block_databases = false leaves every database reachable."""
    add_ini(project, "harness_block_databases = false")
    project.makepyfile(
        """
        from appdemo.db import engine

        async def test_reaches_it():
            async with engine.connect():
                pass
            await engine.dispose()
        """
    )
    run(project).assert_outcomes(passed=1)


def test_the_adopted_engine_in_a_test_without_a_scope_is_refused(project: pytest.Pytester) -> None:
    """After adoption, a test with no database fixture cannot write for real through the app's engine."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    project.makepyfile(
        """
        from sqlalchemy import insert

        from appdemo.db import engine
        from appdemo.models import Note

        async def test_first(db_session):
            pass

        async def test_no_scope():
            async with engine.begin() as connection:
                await connection.execute(insert(Note).values(text="escapes?"))
        """
    )
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * harness.exceptions.ScopeError: The app's engine 'appdemo.db:engine' (adopted by harness: it works "
            "on the test database) was used at *test_the_adopted_engine_in_a_test_without_a_scope_is_refused.py:10 "
            "in test_no_scope with no database scope open, so its writes would stay in the test database for later "
            "tests. Give the test a scope: ask for db_session (or app_client), or subclass harness.IntegrationTest; "
            "for real commits use harness.RealCommitsTest or harness.commit_scope()."
        ]
    )


def test_a_forgotten_bind_says_what_to_bind(project: pytest.Pytester) -> None:
    """SQLAlchemy's UnboundExecutionError gets a note naming harness_engines and harness_app_bind."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    project.makepyfile(
        """
        from sqlalchemy import select

        from appdemo.db import Unbound
        from appdemo.models import Note

        async def test_unbound(db_session):
            async with Unbound() as session:
                await session.execute(select(Note))
        """
    )
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * sqlalchemy.exc.UnboundExecutionError: Could not locate a bind*",
            "E * harness: a session of the app has no engine to run on. If the app binds its sessionmaker at "
            "start-up (in its lifespan), keep the lifespan on (app_client runs it unless harness_app_lifespan = "
            "off). Otherwise point the app at the test database: adopt its engine (harness_engines = app.db:engine "
            "in the pytest configuration) or list its async_sessionmaker in the harness_app_bind fixture.",
        ]
    )


def test_the_lifespan_is_switched_off_by_marker_and_ini(project: pytest.Pytester) -> None:
    """@pytest.mark.app_client(lifespan=False) skips it for a test; harness_app_lifespan = off for all."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    project.makepyfile(
        """
        import pytest

        import appdemo.main

        STARTS = []

        @pytest.fixture(autouse=True)
        def count_starts(monkeypatch):
            lifespan = appdemo.main.app.router.lifespan_context
            def counting(app):
                STARTS.append(1)
                return lifespan(app)
            monkeypatch.setattr(appdemo.main.app.router, "lifespan_context", counting)

        async def test_runs_it(app_client):
            assert STARTS == [1]

        @pytest.mark.app_client(lifespan=False)
        async def test_skips_it(app_client):
            assert STARTS == [1]
        """
    )
    run(project).assert_outcomes(passed=2)
    add_ini(project, "harness_app_lifespan = off")
    result = run(project)
    result.assert_outcomes(failed=2)  # neither test started it
    result.stdout.fnmatch_lines(["FAILED *::test_runs_it*", "FAILED *::test_skips_it*"])


def test_client_options_give_every_test_a_base_url_and_headers(harness_pytester: pytest.Pytester) -> None:
    """harness_app_client_options sets base_url (a path prefix, the Host header) and default headers;
    the app_client marker's options win, and its headers are added to the fixture's."""
    harness_pytester.makeconftest(
        """
        import pytest
        from fastapi import FastAPI, Request

        app = FastAPI()

        @app.get("/api/echo")
        async def echo(request: Request):
            return {"host": request.headers["host"], "path": request.url.path, "tenant": request.headers.get("x-tenant"),
                    "trace": request.headers.get("x-trace")}

        @pytest.fixture
        def harness_app():
            return app

        @pytest.fixture
        def harness_app_client_options():
            return {"base_url": "https://acme.example.test/api", "headers": {"X-Tenant": "acme"}}
        """
    )
    harness_pytester.makepyfile(
        """
        import pytest

        async def test_the_fixture_options(app_client):
            reply = (await app_client.get("/echo")).json()
            assert reply == {"host": "acme.example.test", "path": "/api/echo", "tenant": "acme", "trace": None}

        @pytest.mark.app_client(headers={"X-Trace": "t1"})
        async def test_marker_headers_are_added(app_client):
            reply = (await app_client.get("/echo")).json()
            assert (reply["tenant"], reply["trace"]) == ("acme", "t1")

        @pytest.mark.app_client(headers={"x-tenant": "beta"})
        async def test_a_marker_header_wins_whatever_its_case(app_client):
            assert (await app_client.get("/echo")).json()["tenant"] == "beta"

        @pytest.mark.app_client(base_url="http://other.test")
        async def test_the_marker_wins(app_client):
            reply = (await app_client.get("/api/echo")).json()
            assert (reply["host"], reply["path"]) == ("other.test", "/api/echo")
        """
    )
    harness_pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=4)


def test_a_bad_lifespan_setting_lists_the_valid_ones(harness_pytester: pytest.Pytester) -> None:
    """harness_app_lifespan takes shared, test or off."""
    add_ini(harness_pytester, "harness_app_lifespan = sometimes")
    result = harness_pytester.runpytest_subprocess()
    result.stderr.fnmatch_lines(
        ["ERROR: 'sometimes' is not a valid harness_app_lifespan. Valid values: shared, test, off."]
    )


SHARED_LIFESPAN_TESTS = """
    import appdemo.main
    import pytest

    EVENTS = []

    @pytest.fixture(scope="session", autouse=True)
    def record(request):
        lifespan = appdemo.main.app.router.lifespan_context
        def recording(app):
            EVENTS.append("start")
            return lifespan(app)
        appdemo.main.app.router.lifespan_context = recording
        yield
        appdemo.main.app.router.lifespan_context = lifespan

    @pytest.mark.parametrize("n", range(3))
    async def test_requests(app_client, n):
        assert (await app_client.post("/notes", params={"text": str(n)})).status_code == 201

    def test_started(request):
        assert EVENTS == request.config.getoption("expected")
"""


def test_a_shared_lifespan_starts_once_per_event_loop(project: pytest.Pytester) -> None:
    """With session loops the app starts once for every test; harness_app_lifespan = test starts it per test."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    use_session_loops(project)
    project.makeconftest(
        textwrap.dedent(CONFTEST)
        + textwrap.dedent(
            """
            def pytest_addoption(parser):
                parser.addoption("--expected", type=lambda s: s.split(","))
            """
        )
    )
    project.makepyfile(SHARED_LIFESPAN_TESTS)
    run(project, "--expected=start").assert_outcomes(passed=4)
    add_ini(project, "harness_app_lifespan = test")
    run(project, "--expected=start,start,start").assert_outcomes(passed=4)


def test_a_shared_lifespan_that_writes_is_refused(project: pytest.Pytester) -> None:
    """Rows written at a shared start-up would vanish with the first test: refused, naming the statement."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    use_session_loops(project)
    main = project.path / "appdemo" / "main.py"
    main.write_text(
        main.read_text().replace(
            "await connection.run_sync(Base.metadata.create_all)",
            "await connection.run_sync(Base.metadata.create_all)\n"
            "        await connection.execute(insert(Note).values(text='seeded at start-up'))",
        )
    )
    project.makepyfile(
        """
        async def test_one(app_client):
            pass

        async def test_two(app_client):
            pass
        """
    )
    result = run(project)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "E * harness.exceptions.LifespanError: The app's lifespan wrote to the database at start-up "
            "('INSERT INTO notes (text) VALUES *'). A lifespan shared by the tests of an event loop starts "
            "inside the first test's transaction, so what it writes would be gone for the others. Run the "
            "lifespan per test (harness_app_lifespan = test), or write that data once with the schema "
            "(harness_schema)."
        ]
    )


def test_db_session_marker_takes_the_scopes_options(project: pytest.Pytester) -> None:
    """@pytest.mark.db_session(populate_existing=True) refreshes what the app changed behind the test."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    project.makepyfile(
        """
        import pytest
        from sqlalchemy import select, update

        from appdemo.db import SessionLocal
        from appdemo.models import Note

        async def rename_in_the_app(note_id):
            async with SessionLocal() as session:
                await session.execute(update(Note).where(Note.id == note_id).values(text="new"))
                await session.commit()

        @pytest.mark.parametrize("refresh", [False, pytest.param(True, marks=pytest.mark.db_session(populate_existing=True))])
        async def test_stale_or_fresh(db_session, refresh):
            note = Note(text="old")
            db_session.add(note)
            await db_session.commit()
            await rename_in_the_app(note.id)
            await db_session.scalar(select(Note))
            assert note.text == ("new" if refresh else "old")
        """
    )
    run(project).assert_outcomes(passed=2)


def test_a_bad_engine_path_stops_the_run(project: pytest.Pytester) -> None:
    """A harness_engines entry that names no engine stops the run before any test, saying why."""
    add_ini(project, "harness_engines = appdemo.db:engin")
    project.makepyfile(
        """
        async def test_one(db_session):
            pass

        async def test_two(db_session):
            pass
        """
    )
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        [
            "*harness could not adopt the app's engines (harness_engines): 'appdemo.db' has no attribute 'engin', "
            "so there is no engine at 'appdemo.db:engin'.*"
        ]
    )


def test_an_app_made_per_test_shuts_the_previous_lifespan_down(project: pytest.Pytester) -> None:
    """harness_app returning a new app per test: each shared lifespan stops when the next app starts."""
    add_ini(project, "harness_engines = appdemo.db:engine")
    use_session_loops(project)
    project.makeconftest(
        textwrap.dedent(
            """
            import contextlib

            import pytest
            from fastapi import FastAPI

            from appdemo.models import Base

            RUNNING = []

            @pytest.fixture(scope="session")
            def harness_schema():
                return Base.metadata

            @pytest.fixture
            def harness_app():
                @contextlib.asynccontextmanager
                async def lifespan(app):
                    RUNNING.append(app)
                    yield
                    RUNNING.remove(app)

                return FastAPI(lifespan=lifespan)
            """
        )
    )
    project.makepyfile(
        """
        import pytest

        from conftest import RUNNING

        @pytest.mark.parametrize("n", range(3))
        async def test_one_app_at_a_time(app_client, n):
            assert RUNNING == [app_client.app]
        """
    )
    run(project).assert_outcomes(passed=3)
