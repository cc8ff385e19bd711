"""Per-test isolation cost: harness's rollback scope against recreating the schema and TRUNCATE.

Each "test" does one ``SELECT 1``; what differs is how it is isolated:

- ``bare``: the SELECT on an already open connection, no isolation: one driver round trip, the floor.
- ``scope``: ``async with rollback_scope(engine) as session: await session.execute(SELECT 1)``.
- ``recipe``: SQLAlchemy's own "join a session into an external transaction" recipe, without
  harness's guards, on an engine with the same driver fixes. ``scope - recipe`` is what harness adds
  (guards) less what it saves (one greenlet hop each way, savepoints sent as plain SQL).
- ``recreate``: drop_all + create_all of the 20-table schema, then the SELECT.
- ``truncate`` (PostgreSQL): one ``TRUNCATE … RESTART IDENTITY CASCADE`` of all tables, then the SELECT.

The cases run interleaved in rounds (a, b, c, a, b, c, …) so machine noise hits them alike, and each
figure is a median. Overhead = median(scope) - median(bare), also expressed in round trips (bare).

    python bench/bench_isolation.py [--postgres-url URL] [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import print_figures, run
from sqlalchemy import ForeignKey, Index, MetaData, String, event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from harness.db import TestDatabase, create_test_engine, rollback_scope
from harness.db.engines import _fix_sqlite_transactions

TABLES = 20


class Base(DeclarativeBase):
    pass


def _declare_tables() -> None:
    # 20 tables with a few columns each, every other one referencing the previous, some indexed.
    for n in range(TABLES):
        attrs: dict[str, Any] = {
            "__tablename__": f"t{n:02d}",
            "id": mapped_column(primary_key=True),
            "name": mapped_column(String(100)),
            "amount": mapped_column(default=0),
            "note": mapped_column(String(200), nullable=True),
            "__annotations__": {
                "id": Mapped[int],
                "name": Mapped[str],
                "amount": Mapped[int],
                "note": Mapped[str | None],
            },
        }
        if n % 2:
            attrs["parent_id"] = mapped_column(ForeignKey(f"t{n - 1:02d}.id"), nullable=True)
            attrs["__annotations__"]["parent_id"] = Mapped[int | None]
            attrs["__table_args__"] = (Index(f"ix_t{n:02d}_name", "name"),)
        type(f"T{n:02d}", (Base,), attrs)


_declare_tables()
METADATA: MetaData = Base.metadata

Case = Callable[[], Awaitable[None]]


def cases(
    engine: AsyncEngine, plain: AsyncEngine, bare_connection: AsyncConnection, postgres: bool
) -> dict[str, Case]:
    select_one = text("SELECT 1")

    async def bare() -> None:
        await bare_connection.execute(select_one)

    async def scope() -> None:
        async with rollback_scope(engine) as session:
            await session.execute(select_one)

    async def recipe() -> None:
        async with plain.connect() as connection:
            transaction = await connection.begin()
            session = AsyncSession(
                bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
            )
            await session.execute(select_one)
            await transaction.rollback()
            await session.close()

    async def recreate() -> None:
        async with engine.begin() as connection:
            await connection.run_sync(METADATA.drop_all)
            await connection.run_sync(METADATA.create_all)
            await connection.execute(select_one)

    async def truncate() -> None:
        names = ", ".join(t.name for t in METADATA.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            await connection.execute(select_one)

    found: dict[str, Case] = {"bare": bare, "scope": scope, "recipe": recipe, "recreate": recreate}
    if postgres:
        found["truncate"] = truncate
    return found


async def measure(run: Case, samples: list[float]) -> None:
    start = time.perf_counter_ns()
    await run()
    samples.append((time.perf_counter_ns() - start) / 1e6)


async def bench_backend(url: str | None, rounds: int) -> dict[str, float]:
    database = TestDatabase(url, schema=METADATA, name="bench_isolation")
    engine = await database.create()
    try:
        # The bare case holds its own connection, so it uses a second engine: a connection from
        # the scope's engine during a scope would join the scope's transaction.
        bare_engine = create_test_engine(database.url)
        plain = create_async_engine(database.url)
        if not database.is_postgres:
            _fix_sqlite_transactions(plain.sync_engine)
        async with bare_engine.connect() as bare_connection:
            all_cases = cases(engine, plain, bare_connection, database.is_postgres)
            # Round trips the scope adds to the test's one SELECT.
            round_trips = await count_round_trips(engine, all_cases["scope"]) - 1
            samples: dict[str, list[float]] = {name: [] for name in all_cases}
            for _ in range(5):  # warm-up: pools, prepared statements, caches
                for run in all_cases.values():
                    await run()
            slow_every = 10  # recreate/truncate are ~100x slower: sample them every 10th round
            for n in range(rounds):
                for name, run in all_cases.items():
                    if name in ("recreate", "truncate") and n % slow_every:
                        continue
                    await measure(run, samples[name])
        await bare_engine.dispose()
        await plain.dispose()
    finally:
        await database.drop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    medians["round_trips_added"] = round_trips
    return medians


async def count_round_trips(engine: AsyncEngine, run: Case) -> int:
    """Statements and transaction calls sent to the driver while ``run`` runs once."""
    calls = 0

    def count(*_: Any) -> None:
        nonlocal calls
        calls += 1

    # BEGIN is sent inside the "begin" event (asyncpg, and harness's SQLite fix), not as a statement.
    events = ["begin", "before_cursor_execute", "commit", "rollback"]
    for name in events:
        event.listen(engine.sync_engine, name, count)
    await run()
    for name in events:
        event.remove(engine.sync_engine, name, count)
    return calls


def report(backend: str, medians: dict[str, float], results: dict[str, Any]) -> None:
    round_trips = medians.pop("round_trips_added")
    overhead = medians["scope"] - medians["bare"]
    figures = {
        f"isolation_overhead_ms_{backend}": round(overhead, 4),
        f"isolation_overhead_roundtrips_{backend}": round(overhead / medians["bare"], 2),
        f"isolation_speedup_vs_recreate_{backend}": round(medians["recreate"] / medians["scope"], 1),
        f"isolation_statements_added_{backend}": round_trips,
        f"isolation_scope_minus_recipe_ms_{backend}": round(medians["scope"] - medians["recipe"], 4),
        f"isolation_recipe_overhead_roundtrips_{backend}": round(
            (medians["recipe"] - medians["bare"]) / medians["bare"], 2
        ),
    }
    if "truncate" in medians:
        figures[f"isolation_speedup_vs_truncate_{backend}"] = round(medians["truncate"] / medians["scope"], 1)
    targets = {
        "isolation_overhead_roundtrips": ("≤", 3.0),
        "statements_added": ("≤", 3.0),
        "speedup_vs_recreate": ("≥", 30.0 if backend == "sqlite" else 50.0),
        "speedup_vs_truncate": ("≥", 20.0),
    }
    print(f"\n{backend}: medians in ms  " + "  ".join(f"{k}={v:.3f}" for k, v in medians.items()))
    print_figures(figures, targets, width=45)
    results.update(figures)
    results.setdefault("isolation_raw_median_ms", {})[backend] = {k: round(v, 4) for k, v in medians.items()}


def main() -> None:
    run(__doc__, bench_backend, report, rounds=400, quick_rounds=60)


if __name__ == "__main__":
    main()
