"""Per-test isolation cost: harness's rollback scope against recreating the schema and TRUNCATE.

Every simulated test runs one ``SELECT 1`` on a 20-table schema; the cases differ only in how the
test is isolated from the next one:

- ``bare``: the SELECT on an already open connection, no isolation. One driver round trip: the floor.
- ``rollback_scope``: ``async with rollback_scope(engine) as session: await session.execute(SELECT 1)``.
- ``recreate``: ``drop_all`` + ``create_all`` in one committed transaction, then the SELECT.
- ``truncate`` (PostgreSQL only): one ``TRUNCATE … RESTART IDENTITY CASCADE`` of all tables and a
  commit, then the SELECT.

The isolation overhead is median(rollback_scope) - median(bare), also expressed in bare round
trips; the speedups compare the whole per-test cost of each approach with the rollback scope. The
cases run interleaved in rounds (a, b, c, a, b, c, …) so that machine noise hits them alike, and
every figure is a median. Targets are reported as PASS/FAIL; the exit status is always 0.

    python bench/bench_isolation.py [--postgres-url URL] [--output .bench/results.json] [--quick]

The PostgreSQL URL (server level; harness creates and drops ``test_bench`` on it) may also come from
``HARNESS_POSTGRES_URL``; without one, only SQLite (in memory) runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import ForeignKey, MetaData, Numeric, String, event, func, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from harness.databases import TestDatabase
from harness.db import create_test_engine, rollback_scope

# -- The schema: 20 tables of a small shop ---------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Row:
    """Columns every table has."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Team(Row, Base):
    __tablename__ = "teams"
    slug: Mapped[str] = mapped_column(String(60), unique=True)


class User(Row, Base):
    __tablename__ = "users"
    email: Mapped[str] = mapped_column(String(200), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)


class Customer(Row, Base):
    __tablename__ = "customers"
    email: Mapped[str] = mapped_column(String(200), index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))


class Address(Row, Base):
    __tablename__ = "addresses"
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    city: Mapped[str] = mapped_column(String(80))


class Category(Row, Base):
    __tablename__ = "categories"
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))


class Product(Row, Base):
    __tablename__ = "products"
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class ProductCategory(Row, Base):
    __tablename__ = "product_categories"
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), index=True)


class Coupon(Row, Base):
    __tablename__ = "coupons"
    code: Mapped[str] = mapped_column(String(30), unique=True)
    percent: Mapped[int]


class Cart(Row, Base):
    __tablename__ = "carts"
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)


class CartItem(Row, Base):
    __tablename__ = "cart_items"
    cart_id: Mapped[int] = mapped_column(ForeignKey("carts.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int]


class Order(Row, Base):
    __tablename__ = "orders"
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    coupon_id: Mapped[int | None] = mapped_column(ForeignKey("coupons.id"))
    status: Mapped[str] = mapped_column(String(20), index=True)


class OrderItem(Row, Base):
    __tablename__ = "order_items"
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int]


class Payment(Row, Base):
    __tablename__ = "payments"
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Refund(Row, Base):
    __tablename__ = "refunds"
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Shipment(Row, Base):
    __tablename__ = "shipments"
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))


class Invoice(Row, Base):
    __tablename__ = "invoices"
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    number: Mapped[str] = mapped_column(String(30), unique=True)


class Review(Row, Base):
    __tablename__ = "reviews"
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    stars: Mapped[int]


class Webhook(Row, Base):
    __tablename__ = "webhooks"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    url: Mapped[str] = mapped_column(String(300))


class Delivery(Row, Base):
    __tablename__ = "deliveries"
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"), index=True)
    status_code: Mapped[int | None]


class AuditEntry(Row, Base):
    __tablename__ = "audit_log"
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(60))


METADATA: MetaData = Base.metadata
assert len(METADATA.tables) == 20, len(METADATA.tables)

# -- Cases -----------------------------------------------------------------------------------------

Case = Callable[[], Awaitable[None]]
SELECT_ONE = text("SELECT 1")
SLOW = ("recreate", "truncate")


def make_cases(engine: AsyncEngine, bare_select: Case, postgres: bool) -> dict[str, Case]:
    truncate_all = text(
        f"TRUNCATE {', '.join(t.name for t in METADATA.sorted_tables)} RESTART IDENTITY CASCADE"
    )

    async def scope() -> None:
        async with rollback_scope(engine) as session:
            await session.execute(SELECT_ONE)

    async def recreate() -> None:
        async with engine.connect() as connection:
            async with connection.begin():
                await connection.run_sync(METADATA.drop_all)
                await connection.run_sync(METADATA.create_all)
            await connection.execute(SELECT_ONE)

    async def truncate() -> None:
        async with engine.connect() as connection:
            async with connection.begin():
                await connection.execute(truncate_all)
            await connection.execute(SELECT_ONE)

    cases = {"bare": bare_select, "rollback_scope": scope, "recreate": recreate}
    if postgres:
        cases["truncate"] = truncate
    return cases


async def statements_of(engine: AsyncEngine, case: Case) -> list[str]:
    """What one run of ``case`` sends through ``engine``: statements plus BEGIN/COMMIT/ROLLBACK."""
    sent: list[str] = []
    listeners: dict[str, Callable[..., None]] = {
        "begin": lambda *_: sent.append("BEGIN"),
        "commit": lambda *_: sent.append("COMMIT"),
        "rollback": lambda *_: sent.append("ROLLBACK"),
        "before_cursor_execute": lambda _c, _cur, statement, *_: sent.append(" ".join(statement.split())),
    }
    for name, listener in listeners.items():
        event.listen(engine.sync_engine, name, listener)
    try:
        await case()
    finally:
        for name, listener in listeners.items():
            event.remove(engine.sync_engine, name, listener)
    return sent


# -- Measurement -----------------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    medians_ms: dict[str, float]
    quartiles_ms: dict[str, tuple[float, float]]  # 25th and 75th percentile: the spread
    samples: dict[str, int]
    scope_statements: list[str] = field(default_factory=list)


async def bench_backend(backend: str, url: str, rounds: int, slow_every: int) -> Result:
    database = TestDatabase(url, schema=METADATA, name="bench")
    engine = await database.create()
    # The bare SELECT runs on a connection of its own engine: harness's engine refuses a second
    # connection while a scope is open, and in-memory SQLite shares one DBAPI connection per engine.
    bare_engine = create_test_engine(database.url)
    try:
        async with bare_engine.connect() as bare_connection:

            async def bare() -> None:
                await bare_connection.execute(SELECT_ONE)

            cases = make_cases(engine, bare, database.is_postgres)
            for name, case in cases.items():  # warm-up: pools, statement caches, compiled SQL
                for _ in range(3 if name in SLOW else 30):
                    await case()
            scope_statements = await statements_of(engine, cases["rollback_scope"])
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for round_ in range(rounds):
                for name, case in cases.items():
                    if name in SLOW and round_ % slow_every:
                        continue
                    start = time.perf_counter_ns()
                    await case()
                    samples[name].append((time.perf_counter_ns() - start) / 1e6)
    finally:
        await bare_engine.dispose()
        await database.drop()
    return Result(
        backend,
        {name: statistics.median(values) for name, values in samples.items()},
        {name: quartiles(values) for name, values in samples.items()},
        {name: len(values) for name, values in samples.items()},
        scope_statements,
    )


def quartiles(values: list[float]) -> tuple[float, float]:
    low, _, high = statistics.quantiles(values, n=4)
    return low, high


# -- Report ----------------------------------------------------------------------------------------

TARGETS: dict[str, tuple[str, float]] = {
    "isolation_overhead_roundtrips_sqlite": ("<=", 3),
    "isolation_overhead_roundtrips_postgres": ("<=", 3),
    "isolation_speedup_vs_recreate_sqlite": (">=", 30),
    "isolation_speedup_vs_recreate_postgres": (">=", 50),
    "isolation_speedup_vs_truncate_postgres": (">=", 20),
}


def figures(result: Result) -> dict[str, float]:
    medians, b = result.medians_ms, result.backend
    overhead = medians["rollback_scope"] - medians["bare"]
    found = {
        f"isolation_overhead_ms_{b}": round(overhead, 4),
        f"isolation_overhead_roundtrips_{b}": round(overhead / medians["bare"], 2),
        f"isolation_speedup_vs_recreate_{b}": round(medians["recreate"] / medians["rollback_scope"], 1),
    }
    if "truncate" in medians:
        found[f"isolation_speedup_vs_truncate_{b}"] = round(
            medians["truncate"] / medians["rollback_scope"], 1
        )
    return found


def verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    sign, bound = TARGETS[key]
    ok = value <= bound if sign == "<=" else value >= bound
    return f"target {sign} {bound:<3} {'PASS' if ok else 'FAIL'}"


def print_report(result: Result, found: dict[str, float]) -> None:
    print(f"\n{result.backend}")
    print(f"  {'case':<16}{'median ms':>10}{'p25-p75 ms':>20}{'samples':>9}")
    for name, median in result.medians_ms.items():
        low, high = result.quartiles_ms[name]
        print(f"  {name:<16}{median:>10.3f}{f'{low:.3f}-{high:.3f}':>20}{result.samples[name]:>9}")
    for key, value in found.items():
        print(f"  {key:<42}{value:>9}   {verdict(key, value)}")
    print(f"  one rollback_scope sends: {', '.join(result.scope_statements)}")


def write_results(output: Path, results: list[Result], found: dict[str, float]) -> None:
    """Merge into the JSON file's top-level dict, which other benchmarks write to as well."""
    merged: dict[str, Any] = json.loads(output.read_text()) if output.exists() else {}
    merged.update(found)
    raw = merged.setdefault("isolation_raw", {})
    for result in results:
        raw[result.backend] = {
            "median_ms": {name: round(value, 4) for name, value in result.medians_ms.items()},
            "p25_p75_ms": {name: [round(q, 4) for q in qs] for name, qs in result.quartiles_ms.items()},
            "samples": result.samples,
            "scope_statements": result.scope_statements,
        }
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".tmp")
    partial.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    partial.replace(output)


async def run(postgres_url: str | None, rounds: int, slow_every: int) -> list[Result]:
    backends = [("sqlite", "sqlite+aiosqlite:///:memory:")]
    if postgres_url:
        backends.append(("postgres", postgres_url))
    return [await bench_backend(backend, url, rounds, slow_every) for backend, url in backends]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres-url", default=os.environ.get("HARNESS_POSTGRES_URL"))
    parser.add_argument("--output", type=Path, default=Path(".bench/results.json"))
    parser.add_argument("--quick", action="store_true", help="about a fifth of the samples, for a smoke run")
    args = parser.parse_args()
    rounds = 60 if args.quick else 300
    slow_every = 3  # recreate/truncate cost tens of ms: sample them every third round

    results = asyncio.run(run(args.postgres_url, rounds, slow_every))
    found: dict[str, float] = {}
    for result in results:
        found.update(figures(result))
        print_report(result, figures(result))
    if not args.postgres_url:
        print("\npostgres: skipped (no --postgres-url and no HARNESS_POSTGRES_URL)")
    write_results(args.output, results, found)
    print(f"\nresults merged into {args.output}")


if __name__ == "__main__":
    main()
