"""Factory batches: harness's ``create_batch`` against the Core floor and factory-boy's flush per object.

1,000 ``Contact`` rows (phone from a Sequence, name from a LazyAttribute) under one parent campaign, each case in
a fresh rollback scope, on SQLite and PostgreSQL:

- ``build``: ``ContactFactory.build_batch(1000, campaign=c)``: factory-boy's own cost, no database
  (``c`` persistent, as in ``create``).
- ``create``: ``await ContactFactory.create_batch(1000, campaign=c)``.
- ``core``: ``connection.execute(insert(contacts), rows)`` of the same 1,000 rows, prepared
  beforehand: the floor.
- ``flush_each``: factory-boy's SQLAlchemy pattern, ``session.add(obj); await session.flush()`` per object.

Persistence cost = create - build, taken within each round (the two run back to back) and then
the median over rounds: the difference of two ~100 µs/row figures is ~20 µs/row, and taking
it round by round keeps the machine's drift out of it. Figures: persistence / core (target ≤ 3)
and flush_each / create (target ≥ 5). Cases run interleaved in rounds so noise hits them alike,
each after a ``gc.collect()`` and with the collector off (a collection of 1,000 fresh objects
landing in one case and not the next was the largest noise here).

    python bench/bench_factories.py [--postgres-url URL] [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import factory
from common import print_figures, run
from sqlalchemy import ForeignKey, String, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from harness import ModelFactory, rollback_scope
from harness.db import TestDatabase

ROWS = 1000


class Base(DeclarativeBase):
    pass


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    contacts: Mapped[list[Contact]] = relationship(back_populates="campaign")


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    campaign: Mapped[Campaign] = relationship(back_populates="contacts")


class CampaignFactory(ModelFactory[Campaign]):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"campaign {n}")


class ContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+1555{n:08d}")
    # Not Faker: its name provider alone costs ~150 µs per call here, the same in build, create and
    # flush_each, and would hide what persisting costs.
    name = factory.LazyAttribute(lambda contact: f"Contact {contact.phone}")
    campaign = factory.SubFactory(CampaignFactory)


Case = Callable[[], Awaitable[float]]


def cases(engine: AsyncEngine) -> dict[str, Case]:
    async def build() -> float:
        # Under the same persistent parent as create: the backref appends to a collection the
        # session tracks (~15 µs per row here, against ~0 for a built parent), in both cases.
        async with rollback_scope(engine):
            parent = await CampaignFactory.create()
            start = time.perf_counter()
            ContactFactory.build_batch(ROWS, campaign=parent)
            return time.perf_counter() - start

    async def create() -> float:
        async with rollback_scope(engine):
            parent = await CampaignFactory.create()
            start = time.perf_counter()
            await ContactFactory.create_batch(ROWS, campaign=parent)
            return time.perf_counter() - start

    async def core() -> float:
        async with rollback_scope(engine) as session:
            parent = await CampaignFactory.create()
            rows = [
                {"phone": f"+1666{n:08d}", "name": f"Contact {n}", "campaign_id": parent.id}
                for n in range(ROWS)
            ]
            connection = await session.connection()
            start = time.perf_counter()
            await connection.execute(insert(Contact.__table__), rows)
            return time.perf_counter() - start

    async def flush_each() -> float:
        async with rollback_scope(engine) as session:
            parent = await CampaignFactory.create()
            start = time.perf_counter()
            for _ in range(ROWS):
                session.add(ContactFactory.build(campaign=parent))
                await session.flush()
            return time.perf_counter() - start

    return {"build": build, "create": create, "core": core, "flush_each": flush_each}


async def count_inserts(engine: AsyncEngine) -> int:
    inserts = 0

    def count(_c: Any, _cu: Any, statement: str, *_: Any) -> None:
        nonlocal inserts
        inserts += statement.lstrip().upper().startswith("INSERT")

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    async with rollback_scope(engine):
        parent = await CampaignFactory.create()
        inserts = 0
        await ContactFactory.create_batch(ROWS, campaign=parent)
    event.remove(engine.sync_engine, "before_cursor_execute", count)
    return inserts


async def bench_backend(url: str | None, rounds: int) -> dict[str, float]:
    database = TestDatabase(url, schema=Base.metadata, name="bench_factories")
    engine = await database.create()
    try:
        all_cases = cases(engine)
        inserts = await count_inserts(engine)
        for run in all_cases.values():  # warm-up: caches, prepared statements, Faker providers
            await run()
        samples: dict[str, list[float]] = {name: [] for name in [*all_cases, "persistence"]}
        for n in range(rounds):
            for name, run in all_cases.items():
                if name == "flush_each" and n % 3:  # ~50x slower than the rest: every third round
                    continue
                gc.collect()
                gc.disable()
                try:
                    samples[name].append(await run() * 1e6 / ROWS)
                finally:
                    gc.enable()
            samples["persistence"].append(samples["create"][-1] - samples["build"][-1])
    finally:
        await database.drop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    medians["inserts"] = inserts
    return medians


def report(backend: str, medians: dict[str, float], results: dict[str, Any]) -> None:
    persist = medians["persistence"]
    figures = {
        f"factory_persist_vs_core_{backend}": round(persist / medians["core"], 2),
        f"factory_batch_speedup_vs_flush_each_{backend}": round(medians["flush_each"] / medians["create"], 1),
        f"factory_batch_inserts_{backend}": medians["inserts"],
    }
    targets = {"persist_vs_core": ("≤", 3.0), "speedup_vs_flush_each": ("≥", 5.0)}
    print(
        f"\n{backend}: µs per row (medians)  "
        + "  ".join(f"{k}={v:.1f}" for k, v in medians.items() if k != "inserts")
        + f"  INSERT statements for {ROWS} rows={medians['inserts']}"
    )
    print_figures(figures, targets, width=50)
    results.update(figures)
    results.setdefault("factory_raw_median_us_per_row", {})[backend] = {
        k: round(v, 2) for k, v in medians.items() if k != "inserts"
    }


def main() -> None:
    run(__doc__, bench_backend, report, rounds=30, quick_rounds=6)


if __name__ == "__main__":
    main()
