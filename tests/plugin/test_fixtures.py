"""The plugin's database fixtures, run through pytester on the run's backend."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.db import TestDatabase
from harness.db.leases import left_behind
from harness.db.testdb import run_aside

MODELS = """
    import pytest
    from sqlalchemy import func, select
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str]

    @pytest.fixture(scope="session")
    def harness_schema():
        return Base.metadata

    async def count_notes(session):
        return await session.scalar(select(func.count()).select_from(Note))
"""

ISOLATION_TESTS = """
    from conftest import Note, count_notes

    async def test_writes_and_commits(db_session):
        db_session.add(Note(text="first"))
        await db_session.commit()
        assert await count_notes(db_session) == 1

    async def test_starts_clean(db_session):
        assert await count_notes(db_session) == 0

    async def test_engine_is_usable_directly(db_engine):
        async with db_engine.connect() as connection:
            assert (await connection.exec_driver_sql("SELECT count(*) FROM notes")).scalar() == 0
"""


def test_db_session_isolates_each_test(harness_pytester: pytest.Pytester) -> None:
    """A committed row of one test is gone in the next; db_engine works in a test of its own."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(ISOLATION_TESTS)
    result = harness_pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("loop_scope", ["class", "module", "session"])
def test_db_fixtures_work_in_wider_event_loops(harness_pytester: pytest.Pytester, loop_scope: str) -> None:
    """With fixtures and tests sharing a class/module/session loop, sessions still isolate each test."""
    harness_pytester.makeini(
        f"""
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = {loop_scope}
        asyncio_default_test_loop_scope = {loop_scope}
        filterwarnings = error
        harness_database_name = wide_{loop_scope}
        """
    )
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        test_one=ISOLATION_TESTS,
        test_two="""
        import pytest
        from conftest import Note, count_notes

        class TestInAClass:
            async def test_writes(self, db_session):
                db_session.add(Note(text="x"))
                await db_session.commit()

            async def test_clean(self, db_session):
                assert await count_notes(db_session) == 0
        """,
    )
    result = harness_pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)


def test_engine_options_fixture_reaches_the_engine(harness_pytester: pytest.Pytester) -> None:
    """Overriding harness_engine_options in conftest.py configures db_engine."""
    harness_pytester.makeconftest(
        MODELS
        + """
    @pytest.fixture(scope="session")
    def harness_engine_options():
        return {"pool_pre_ping": True}
    """
    )
    harness_pytester.makepyfile(
        """
        async def test_pre_ping(db_engine):
            assert db_engine.sync_engine.pool._pre_ping is True
        """
    )
    harness_pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_database_url_fixture_override_wins(harness_pytester: pytest.Pytester) -> None:
    """A conftest.py override of harness_database_url picks the test database's location."""
    target = harness_pytester.path / "data" / "shop.db"
    harness_pytester.makeconftest(
        MODELS
        + f"""
    @pytest.fixture(scope="session")
    def harness_database_url():
        return "sqlite:///{target}"
    """
    )
    harness_pytester.makepyfile(
        f"""
        import os

        async def test_file(harness_database, db_session):
            assert os.path.dirname(str(harness_database.url.database)) == "{target.parent}"
            assert os.path.exists(harness_database.url.database)
        """
    )
    harness_pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_per_worker_databases_under_xdist(harness_pytester: pytest.Pytester) -> None:
    """Under pytest -n 2 each worker has its own database, named after the worker."""
    seen = harness_pytester.mkdir("seen")
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        f"""
        import os
        import pathlib
        import pytest
        from conftest import Note, count_notes

        @pytest.mark.parametrize("n", range(8))
        async def test_worker_database(harness_database, db_session, n):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            assert harness_database.name.endswith("_" + worker)
            db_session.add(Note(text=str(n)))
            await db_session.commit()
            assert await count_notes(db_session) == 1
            (pathlib.Path({str(seen)!r}) / str(n)).write_text(harness_database.name)
        """
    )
    result = harness_pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=8)
    names = {path.read_text() for path in seen.iterdir()}
    assert {name.rsplit("_", 1)[1] for name in names} == {"gw0", "gw1"}


def test_two_runs_of_one_project_share_a_server_and_leave_nothing_behind(
    harness_pytester: pytest.Pytester, harness_database: TestDatabase
) -> None:
    """Two runs of the same suite, started at the same moment with -n 2 each, on one server (or one
    machine's SQLite folder): neither drops or sees the other's databases, and when both are done
    none of their databases or templates is left."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import asyncio
        import pytest
        from sqlalchemy.ext.asyncio import AsyncSession
        from conftest import Note, count_notes

        @pytest.mark.parametrize("n", range(6))
        @pytest.mark.db_session(real_commits=True)
        async def test_commits_for_real(db_session, db_engine, n):
            async with AsyncSession(db_engine) as own:
                own.add(Note(text=str(n)))
                await own.commit()
            await asyncio.sleep(0.2)  # the other run writes meanwhile
            assert await count_notes(db_session) == 1
        """
    )
    name = next(
        line.split("=")[1].strip()
        for line in (harness_pytester.path / "tox.ini").read_text().splitlines()
        if line.startswith("harness_database_name")
    )
    command = [sys.executable, "-m", "pytest", "-n", "2", "-p", "xdist", "-p", "no:randomly"]
    runs = [
        subprocess.Popen(
            command, cwd=harness_pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
        assert "6 passed" in output, output
    # Each run names its databases apart (a lease alone would only make the second run wait).
    databases = [
        next(line for line in output.splitlines() if "harness: test database" in line) for output in outputs
    ]
    assert databases[0] != databases[1]
    if harness_database.is_postgres:
        server = harness_database.server_url.render_as_string(hide_password=False)
        left = [each.name for each in run_aside(left_behind(server)) if name in each.name]
    else:
        left = [path.name for path in (Path(tempfile.gettempdir()) / "harness").glob(f"test_{name}_*")]
    assert left == []


SEEDED_MODELS = """
    import secrets

    import pytest
    from sqlalchemy import ForeignKey
    from sqlalchemy.ext.asyncio import AsyncAttrs
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

    class Base(AsyncAttrs, DeclarativeBase):
        pass

    class Tenant(Base):
        __tablename__ = "tenants"
        id: Mapped[int] = mapped_column(primary_key=True)
        token: Mapped[str]
        users: Mapped[list["User"]] = relationship(back_populates="tenant")

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str]
        tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
        tenant: Mapped[Tenant | None] = relationship(back_populates="users")

    async def reference_data(session):
        tenants = [Tenant(token=secrets.token_hex(8)) for _ in range(50)]  # random, as real tokens are
        admin = User(email="admin@acme.test", tenant=tenants[0])
        session.add_all([*tenants, admin])
        return {"acme": tenants[0], "tenants": tenants, "admin": admin}

    @pytest.fixture(scope="session")
    def harness_schema():
        return Base.metadata

    @pytest.fixture(scope="session")
    def harness_seed():
        return reference_data
"""


def test_seed_data_is_the_same_for_every_worker_and_fresh_in_every_test(
    harness_pytester: pytest.Pytester,
) -> None:
    """Seeded once into the template under -n 2: identical ids and tokens in both workers, and a
    change one test makes (to a relationship too) never reaches another test."""
    seen = harness_pytester.mkdir("seen")
    harness_pytester.makeconftest(SEEDED_MODELS)
    harness_pytester.makepyfile(
        f"""
        import os
        import pathlib
        import pytest
        from conftest import User

        @pytest.mark.parametrize("n", range(8))
        async def test_starts_from_the_seed_and_changes_it(seeded, db_session, n):
            assert seeded.admin.tenant is seeded.acme  # loaded into this test's session
            assert [user.email for user in await seeded.acme.awaitable_attrs.users] == ["admin@acme.test"]
            tokens = ",".join(f"{{t.id}}:{{t.token}}" for t in seeded.tenants)
            (pathlib.Path({str(seen)!r}) / str(n)).write_text(os.environ["PYTEST_XDIST_WORKER"] + " " + tokens)
            seeded.admin.tenant = seeded.tenants[n + 1]  # what the ported suite's earlier test did
            seeded.acme.token = "changed"
            db_session.add(User(email=f"{{n}}@acme.test", tenant=seeded.acme))
            await db_session.commit()
        """
    )
    result = harness_pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=8)
    runs = [path.read_text().split(" ", 1) for path in seen.iterdir()]
    assert {worker for worker, _ in runs} == {"gw0", "gw1"}
    assert len({tokens for _, tokens in runs}) == 1
    assert "changed" not in runs[0][1]


def test_seeded_without_a_seed_says_how_to_give_one(harness_pytester: pytest.Pytester) -> None:
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile("async def test_it(seeded):\n    pass\n")
    result = harness_pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*The seeded fixture needs seed data: override the harness_seed fixture*"])


def test_fixtures_work_in_strict_asyncio_mode(harness_pytester: pytest.Pytester) -> None:
    """Under pytest-asyncio's strict mode, marked tests get db_engine and db_session."""
    harness_pytester.makeini(
        """
        [pytest]
        asyncio_mode = strict
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        harness_database_name = strict_mode
        """
    )
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import pytest
        from conftest import Note, count_notes

        @pytest.mark.asyncio
        async def test_strict(db_session):
            db_session.add(Note(text="x"))
            await db_session.commit()
            assert await count_notes(db_session) == 1
        """
    )
    harness_pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_wider_loop_pool_is_closed_before_a_test_without_the_database(
    harness_pytester: pytest.Pytester,
) -> None:
    """With module loops, a module whose last test skips the database still closes the pool in its loop."""
    harness_pytester.makeini(
        """
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = module
        asyncio_default_test_loop_scope = module
        filterwarnings = error
        harness_database_name = module_gap
        """
    )
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        test_a="""
        from conftest import count_notes

        async def test_uses_db(db_session):
            assert await count_notes(db_session) == 0

        async def test_does_not():
            pass
        """,
        test_b="""
        from conftest import count_notes

        async def test_uses_db_in_a_new_loop(db_session):
            assert await count_notes(db_session) == 0
        """,
    )
    harness_pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=3)
