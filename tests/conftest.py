from __future__ import annotations

import itertools
import os
import textwrap

import pytest
import pytest_asyncio
import sqlalchemy
from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from harness._versions import release
from harness.db import TestDatabase
from tests.models import Base, Campaign, Contact

_inner_runs = itertools.count()


# Before 2.0.38 SQLAlchemy gives aiosqlite files a NullPool: no pool sizes, no checked-out count.
SQLITE_FILES_POOLED = release(sqlalchemy.__version__) >= (2, 0, 38)


def pytest_configure(config: pytest.Config) -> None:
    # Each inner pytest run (pytester, subprocesses) rewrites the asserts of every plugin's modules,
    # harness's and Faker's among them. Where PYTHONDONTWRITEBYTECODE is set (as on CI machines here)
    # it cannot cache them and does it again at every start: 3.4 s per run instead of 1.2 s.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if release(pytest_asyncio.__version__) < (1, 4):
        # pytest-asyncio < 1.4 drops its event loop unclosed after a test calls asyncio.run(); the
        # loop's self-pipe (AF_UNIX sockets, family=1) is reported whenever it is collected. Other
        # leaks (a TCP connection is family=2) still fail the run.
        for line in (
            "ignore:Exception ignored in. <socket.socket fd=-1, family=1:pytest.PytestUnraisableExceptionWarning",
            "ignore:unclosed <socket.socket fd=[0-9]+, family=1:ResourceWarning",
            "ignore:unclosed event loop:ResourceWarning",
        ):
            config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session")
def harness_schema() -> MetaData:
    return Base.metadata


@pytest.fixture(scope="session")
def on_postgres(harness_database: TestDatabase) -> bool:
    return harness_database.is_postgres


@pytest.fixture
def harness_pytester(
    pytester: pytest.Pytester, pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """pytester with a fixed ini, the outer run's database server and a database name of its own."""
    name = f"inner_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{next(_inner_runs)}"
    pytester.makeini(
        textwrap.dedent(
            f"""
            [pytest]
            asyncio_mode = auto
            asyncio_default_fixture_loop_scope = function
            filterwarnings = error
            harness_database_name = {name}
            """
        )
    )
    url = pytestconfig.getoption("--harness-database-url")
    # An inner run is a run of its own, not one of the outer run's xdist workers.
    for variable in (
        "PYTEST_ADDOPTS",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_XDIST_TESTRUNUID",
    ):
        monkeypatch.delenv(variable, raising=False)
    if url:
        monkeypatch.setenv("HARNESS_DATABASE_URL", url)
    else:
        monkeypatch.delenv("HARNESS_DATABASE_URL", raising=False)
    return pytester


async def count_rows(engine: AsyncEngine) -> dict[str, int]:
    """Rows per table, read on a fresh connection outside any scope."""
    async with engine.connect() as connection:
        return {
            "campaigns": (await connection.execute(select(func.count()).select_from(Campaign))).scalar_one(),
            "contacts": (await connection.execute(select(func.count()).select_from(Contact))).scalar_one(),
        }
