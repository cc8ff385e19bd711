"""What a database test costs through pytest: a generated module run by pytest in a subprocess.

The module holds N async tests that take ``db_session``, interleaved with N plain async tests; both
do nothing else, so the difference is what asking for ``db_session`` costs (a query's own cost is
``bench_isolation.py``'s). A conftest plugin times each test's whole protocol (set-up, call,
tear-down), and machine noise hits both kinds alike. The figure is median(db test) -
median(plain test), in ms: pytest's fixture machinery, harness's guards and the rollback scope. It
is measured with pytest-asyncio's default function loops and with session loops, on SQLite and on
PostgreSQL through each driver. With function loops a PostgreSQL test opens a connection of its
own (a connection cannot move between event loops): ``connect_ms`` is that floor, a bare
``asyncpg.connect()`` and ``close()`` to the same server.

    python bench/bench_pytest.py [--postgres-url URL] [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import command_line, merge_results, print_figures

CONFTEST = """
import json
import os
import time

import pytest
from sqlalchemy import MetaData, Table, Column, Integer

metadata = MetaData()
Table("things", metadata, Column("id", Integer, primary_key=True))
times = {}


@pytest.fixture(scope="session")
def harness_schema():
    return metadata


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        times[item.name] = time.perf_counter() - start


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMES"], "w") as out:
        json.dump(times, out)
"""

TESTS = "{tests}"

DB_TEST = """
async def test_db_{n}(db_session):
    pass
"""

PLAIN_TEST = """
async def test_plain_{n}():
    pass
"""

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = {scope}
asyncio_default_test_loop_scope = {scope}
harness_database_name = bench_pytest
"""


def measure(count: int, url: str | None, loops: str) -> tuple[float, float, float]:
    """(median db test, median plain test, overhead) in ms, for one pytest run of 2 * count tests."""
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "conftest.py").write_text(CONFTEST)
        tests = "".join(DB_TEST.format(n=n) + PLAIN_TEST.format(n=n) for n in range(count))
        (project / "test_generated.py").write_text(TESTS.format(tests=tests))
        (project / "pytest.ini").write_text(INI.format(scope=loops))
        env = {**os.environ, "BENCH_TIMES": str(project / "times.json")}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
        if url:
            command.append(f"--harness-database-url={url}")
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"the generated suite failed ({loops} loops, {url or 'sqlite'}):\n{done.stdout[-3000:]}")
        times: dict[str, float] = json.loads((project / "times.json").read_text())
    db = statistics.median(t for name, t in times.items() if name.startswith("test_db_")) * 1000
    plain = statistics.median(t for name, t in times.items() if name.startswith("test_plain_")) * 1000
    return round(db, 3), round(plain, 3), round(db - plain, 3)


def connect_floor(url: str, count: int = 50) -> float:
    """Median ms of a bare asyncpg connect() and close() to the server: what a test in a loop of its
    own pays at least, whatever harness does."""
    import asyncio

    import asyncpg

    server = re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url).rsplit("/", 1)[0] + "/postgres"

    async def timings() -> list[float]:
        spent = []
        for _ in range(count):
            start = time.perf_counter()
            connection = await asyncpg.connect(server)
            await connection.close()
            spent.append(time.perf_counter() - start)
        return spent

    return round(statistics.median(asyncio.run(timings())) * 1000, 3)


def main() -> None:
    args = command_line(__doc__)
    count = 200 if args.quick else 2000
    backends: dict[str, str | None] = {"sqlite": None}
    if args.postgres_url:
        backends["postgres"] = args.postgres_url
        backends["postgres_psycopg"] = re.sub(
            r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", args.postgres_url
        )
    else:
        print("postgres: skipped (no --postgres-url or HARNESS_POSTGRES_URL)")
    results: dict[str, Any] = {}
    print(f"pytest, {count} db_session tests interleaved with {count} plain async tests (medians, ms)")
    for backend, url in backends.items():
        for loops in ("function", "session"):
            db, plain, overhead = measure(count, url, loops)
            suffix = "" if loops == "function" else "_session_loops"
            figures = {
                f"pytest_db_test_ms_{backend}{suffix}": db,
                f"pytest_plain_test_ms_{backend}{suffix}": plain,
                f"pytest_db_test_overhead_ms_{backend}{suffix}": overhead,
            }
            if backend == "postgres" and loops == "function":
                figures["pytest_postgres_connect_close_floor_ms"] = connect_floor(url or "")
            print(f"\n{backend}, {loops} loops:")
            print_figures(figures, TARGETS)
            results.update(figures)
    merge_results(args.output, results)


TARGETS = {
    "pytest_db_test_overhead_ms_sqlite": ("≤", 1.5),
    "pytest_db_test_overhead_ms_postgres": ("≤", 2.5),
}


if __name__ == "__main__":
    main()
