"""Per-test cost of an app test through harness's app_client, against the hand-written recipe.

Each "test" makes one POST that writes a row and one GET that reads it back, through a FastAPI app
shaped like most projects: an engine built at import time, a sessionmaker on it, a ``get_db``
dependency that commits after ``yield``. What differs is how the test is isolated:

- ``harness``: the app's engine adopted once (as ``harness_engines`` does), then per test
  ``rollback_scope(engine)`` + ``app_client(app)``; the lifespan is shared by the tests, as the
  plugin does with ``harness_app_lifespan = shared`` in a session-wide event loop.
- ``harness_lifespan_per_test``: the same with the lifespan started and stopped in every test
  (``harness_app_lifespan = test``, or function-scoped event loops). Reported, no target.
- ``recipe``: SQLAlchemy's recipe by hand: a connection, an outer transaction, ``get_db`` overridden
  with a session per request joined to it (``join_transaction_mode="create_savepoint"``, committed
  after ``yield`` as the app's own does), and a bare ``httpx.ASGITransport`` client.

Both sides send the same SQL, on a SQLite file or a PostgreSQL database. The cases run interleaved
in rounds and each figure is a median.

    python bench/bench_app.py [--postgres-url URL] [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from common import print_figures, run
from fastapi import Depends, FastAPI
from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from harness import AppLifespan, TestDatabase, adopt_engines, app_client, rollback_scope
from harness.db.engines import _fix_sqlite_transactions


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


def make_app(development: Path) -> tuple[FastAPI, Any, Any]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{development}")  # never connected to
    session_local = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI()

    async def get_db() -> AsyncIterator[AsyncSession]:
        async with session_local() as session:
            yield session
            await session.commit()

    @app.post("/items", status_code=201)
    async def create(name: str, db: AsyncSession = Depends(get_db)) -> dict[str, int]:  # noqa: B008
        item = Item(name=name)
        db.add(item)
        await db.flush()
        return {"id": item.id}

    @app.get("/items/count")
    async def count(db: AsyncSession = Depends(get_db)) -> dict[str, int]:  # noqa: B008
        return {"count": await db.scalar(select(func.count()).select_from(Item)) or 0}

    return app, engine, get_db


Case = Callable[[], Awaitable[None]]


async def bench_backend(url: str | None, rounds: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp())
    if url is None or url.startswith("sqlite"):  # a file: the recipe's own engine must see the same database
        url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    database = TestDatabase(url, schema=Base.metadata, name="bench_app")
    engine = await database.create()
    app, app_engine, get_db = make_app(folder / "development.db")
    plain = create_async_engine(database.url)
    if not database.is_postgres:
        _fix_sqlite_transactions(plain.sync_engine)

    async def requests(client: httpx.AsyncClient) -> None:
        assert (await client.post("/items", params={"name": "x"})).status_code == 201
        assert (await client.get("/items/count")).json() == {"count": 1}

    async def harness_shared(lifespan: AppLifespan) -> None:
        async with rollback_scope(engine), app_client(app, lifespan=lifespan) as client:
            await requests(client)

    async def harness_per_test() -> None:
        async with rollback_scope(engine), app_client(app) as client:
            await requests(client)

    async def recipe() -> None:
        async with plain.connect() as connection:
            transaction = await connection.begin()

            async def override() -> AsyncIterator[AsyncSession]:
                async with AsyncSession(
                    bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
                ) as session:
                    yield session
                    await session.commit()

            app.dependency_overrides[get_db] = override
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await requests(client)
            app.dependency_overrides.clear()
            await transaction.rollback()

    samples: dict[str, list[float]] = {"harness": [], "harness_lifespan_per_test": [], "recipe": []}
    try:
        with adopt_engines(app_engine, test_engine=engine):
            async with rollback_scope(engine), AppLifespan(app) as lifespan:
                pass  # start-up checked once, as the plugin's shared lifespan is
            async with AppLifespan(app) as lifespan:
                cases: dict[str, Case] = {
                    "harness": lambda: harness_shared(lifespan),
                    "harness_lifespan_per_test": harness_per_test,
                    "recipe": recipe,
                }
                for _ in range(10):  # warm-up: pools, prepared statements, caches
                    for case in cases.values():
                        await case()
                for _ in range(rounds):
                    for name, case in cases.items():
                        start = time.perf_counter_ns()
                        await case()
                        samples[name].append((time.perf_counter_ns() - start) / 1e6)
        assert not (folder / "development.db").exists()
    finally:
        await plain.dispose()
        await database.drop()
    return {name: statistics.median(values) for name, values in samples.items()}


def report(backend: str, medians: dict[str, float], results: dict[str, Any]) -> None:
    figures = {
        f"app_test_overhead_vs_recipe_{backend}": round(medians["harness"] / medians["recipe"], 3),
        f"app_test_ms_{backend}": round(medians["harness"], 3),
        f"app_test_recipe_ms_{backend}": round(medians["recipe"], 3),
        f"app_test_lifespan_per_test_vs_recipe_{backend}": round(
            medians["harness_lifespan_per_test"] / medians["recipe"], 3
        ),
    }
    targets = {"app_test_overhead_vs_recipe": ("≤", 1.05)}
    print(f"\n{backend}: medians in ms  " + "  ".join(f"{k}={v:.3f}" for k, v in medians.items()))
    print_figures(figures, targets, width=48)
    results.update(figures)


def main() -> None:
    run(__doc__, bench_backend, report, rounds=400, quick_rounds=60)


if __name__ == "__main__":
    main()
