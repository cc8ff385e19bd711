"""Real-commit tests: harness's commit scope against dropping and recreating the schema per test.

The test: three sessions at once (``asyncio.gather``), each committing one row to its own table of
bench_isolation's 20-table schema. Cases, interleaved round by round so noise hits them alike:

- ``scope``: ``async with commit_scope(engine)`` around the test; its own cost is the time to enter
  plus the time to clean up on exit (the test's own time not counted);
- ``recreate``: ``drop_all`` + ``create_all`` before the test, as hand-written suites isolate
  real commits.

Figures: ``commit_scope_vs_recreate_<backend>`` = median(enter + clean-up) / median(drop + create),
target ≤ 0.25; ``commit_scope_overhead_ms_<backend>``, the scope's median cost; and the whole test
both ways (``commit_scope_test_vs_recreate_test``), so a cost moved from the scope into the test
(reconnecting, say) shows.

    python bench/bench_commit_scope.py [--postgres-url URL] [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import Any

from bench_isolation import METADATA
from common import print_figures, run
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from harness.db import TestDatabase, commit_scope

TABLES = [METADATA.tables[name] for name in ("t00", "t02", "t04")]


async def the_test(engine: AsyncEngine) -> None:
    async def commit_one(table: Any) -> None:
        async with AsyncSession(engine) as session:
            await session.execute(table.insert().values(name="row", amount=1))
            await session.commit()

    await asyncio.gather(*(commit_one(table) for table in TABLES))


async def bench_backend(url: str | None, rounds: int) -> dict[str, float]:
    if url is None or url.startswith("sqlite"):  # files: an in-memory database has one connection
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='harness-bench-')}/test_commits.db"
    # A database per case, so that neither pays for the other: DDL on the tables a scope watches
    # would invalidate the server's and the driver's cached plans of the scope's queries.
    scoped = TestDatabase(url, schema=METADATA, name="bench_commit_scope")
    recreated = TestDatabase(url, schema=METADATA, name="bench_recreate")
    engine, other = await scoped.create(), await recreated.create()
    samples: dict[str, list[float]] = {"scope": [], "recreate": [], "scope_test": [], "recreate_test": []}
    try:
        for n in range(rounds + 5):  # the first 5: warm-up (pools, caches, the tables' reflection)
            scope = commit_scope(engine)
            started = time.perf_counter()
            await scope.__aenter__()
            entered = time.perf_counter()
            await the_test(engine)
            tested = time.perf_counter()
            await scope.__aexit__(None, None, None)
            ended = time.perf_counter()

            async with other.begin() as connection:
                await connection.run_sync(METADATA.drop_all)
                await connection.run_sync(METADATA.create_all)
            recreated_at = time.perf_counter()
            await the_test(other)
            recreate_tested = time.perf_counter()
            if n >= 5:
                samples["scope"].append((entered - started) + (ended - tested))
                samples["scope_test"].append(ended - started)
                samples["recreate"].append(recreated_at - ended)
                samples["recreate_test"].append(recreate_tested - ended)
    finally:
        await scoped.drop()
        await recreated.drop()
    return {name: statistics.median(values) * 1e3 for name, values in samples.items()}


def report(backend: str, medians: dict[str, float], results: dict[str, Any]) -> None:
    figures = {
        f"commit_scope_vs_recreate_{backend}": round(medians["scope"] / medians["recreate"], 3),
        f"commit_scope_overhead_ms_{backend}": round(medians["scope"], 3),
        f"commit_scope_test_vs_recreate_test_{backend}": round(
            medians["scope_test"] / medians["recreate_test"], 3
        ),
    }
    print(f"\n{backend}: medians in ms  " + "  ".join(f"{k}={v:.3f}" for k, v in medians.items()))
    print_figures(figures, {"commit_scope_vs_recreate": ("≤", 0.25)}, width=45)
    results.update(figures)


def main() -> None:
    run(__doc__, bench_backend, report, rounds=200, quick_rounds=30)


if __name__ == "__main__":
    main()
