"""harness.db.seed: rows committed once with the schema, the same for every worker, fresh in every test."""

from __future__ import annotations

import functools
import secrets
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from harness import SchemaError, TestDatabase, rollback_scope
from harness.db.seed import Seeded, load_seeded
from tests.factories import ContactFactory
from tests.models import Base, Campaign, Contact
from tests.unit.test_databases import server_url

__all__ = ["server_url"]  # the fixture, shared with test_databases

calls: list[str] = []


async def reference_data(session: AsyncSession) -> dict[str, Any]:
    calls.append("seeded")
    acme = Campaign(name=f"Acme {secrets.token_hex(4)}")  # random: a second run of this would differ
    session.add(acme)
    await session.flush()
    contacts = await ContactFactory.create_batch(
        3, campaign=acme
    )  # factories create through the seed's session
    return {"acme": acme, "contacts": contacts}


def databases(server_url: str, *workers: str, seed: Any = reference_data) -> list[TestDatabase]:
    name = f"seed_{uuid.uuid4().hex[:8]}"
    return [
        TestDatabase(server_url, name=name, worker=w, schema=Base.metadata, seed=seed, run_id=name)
        for w in workers
    ]


async def test_the_seed_runs_once_and_every_worker_sees_the_same_rows(server_url: str) -> None:
    calls.clear()
    workers = databases(server_url, "gw0", "gw1")
    seen = []
    try:
        for database in workers:
            engine = await database.create()
            async with rollback_scope(engine) as session:
                seeded = await load_seeded(session)
                seen.append((seeded.acme.id, seeded.acme.name, [c.phone for c in seeded.contacts]))
        assert calls == ["seeded"]  # built once into the template, copied (SQLite) or cloned (PostgreSQL)
        assert seen[0] == seen[1]
        assert len(seen[0][2]) == 3
    finally:
        for database in workers:
            await database.drop()


async def test_each_session_gets_fresh_objects_whatever_an_earlier_test_changed(server_url: str) -> None:
    (database,) = databases(server_url, "gw0")
    engine = await database.create()
    try:
        async with rollback_scope(engine) as session:
            seeded = await load_seeded(session)
            name = seeded.acme.name
            seeded.acme.name = "changed"
            seeded["contacts"][0].campaign = None  # a relationship, as in the ported suite's failure
            session.add(Contact(phone="+1999", campaign=seeded.acme))
            await session.commit()
        async with rollback_scope(engine) as session:
            again = await load_seeded(session)
            assert again.acme.name == name
            contacts = await again.acme.awaitable_attrs.contacts
            assert sorted(c.id for c in contacts) == sorted(c.id for c in again.contacts)
            assert await session.scalar(select(func.count()).select_from(Contact)) == 3
    finally:
        await database.drop()


async def test_a_missing_name_says_which_names_there_are(server_url: str) -> None:
    seeded = Seeded({"acme": object(), "contacts": []})
    with pytest.raises(
        AttributeError, match=r"^The seed function named no 'admin'; it returned acme, contacts\.$"
    ):
        _ = seeded.admin
    with pytest.raises(KeyError, match="named no 'admin'"):
        _ = seeded["admin"]
    assert repr(seeded) == "<Seeded acme, contacts>"
    assert dict(seeded).keys() == {"acme", "contacts"}


@pytest.mark.parametrize(
    ("returns", "error"),
    [
        ({"acme": "Acme"}, r"returned 'acme': 'Acme', which is not a row it added\."),
        ({"items": [], "_private": []}, r"named '_private', 'items', which `seeded.<name>` cannot reach"),
        (
            {"acme": Campaign(name="never added")},
            r"returned 'acme': <tests\.models\.Campaign object .*>, which is not a row",
        ),
        (
            "mixed",
            r"returned 'both' with objects of several classes \(tests\.models:Campaign, tests\.models:Contact\)",
        ),
    ],
)
async def test_what_a_seed_cannot_return_is_refused(server_url: str, returns: Any, error: str) -> None:
    async def seed(session: AsyncSession) -> Any:
        if returns == "mixed":
            campaign = Campaign(name="Acme")
            contact = Contact(phone="+1", campaign=campaign)
            session.add_all([campaign, contact])
            await session.flush()
            return {"both": [campaign, contact]}
        return returns

    (database,) = databases(server_url, "gw0", seed=seed)
    with pytest.raises(SchemaError, match=error):
        await database.create()
    await database.drop()


async def test_a_failing_seed_is_named_and_nothing_is_left(server_url: str) -> None:
    async def broken_seed(session: AsyncSession) -> None:
        session.add(Campaign(name="x"))
        session.add(Campaign(name="x"))  # the unique name
        await session.flush()

    (database,) = databases(server_url, "gw0", seed=broken_seed)
    with pytest.raises(SchemaError) as caught:
        await database.create()
    assert str(caught.value).startswith(
        f"The seed function test_a_failing_seed_is_named_and_nothing_is_left.<locals>.broken_seed failed on test "
        f"database {database.template_name!r}: IntegrityError: "
    )
    assert str(caught.value).endswith("Fix the seed function; the half-built database was discarded.")
    # the name is free again: a working seed builds
    database.seed = reference_data
    await database.create()
    await database.drop()


def test_a_changed_seed_function_rebuilds_a_reused_database(server_url: str) -> None:
    async def other(session: AsyncSession) -> None:
        return None

    plain, seeded, different = (
        TestDatabase(server_url, name="fp", schema=Base.metadata, seed=seed)
        for seed in (None, reference_data, other)
    )
    assert len({plain._fingerprint(), seeded._fingerprint(), different._fingerprint()}) == 3
    # a partial's repr holds a memory address: the fingerprint must not, or each xdist worker
    # would see another and rebuild the template under the others
    partials = [
        TestDatabase(server_url, name="fp", schema=Base.metadata, seed=functools.partial(reference_data))
        for _ in range(2)
    ]
    assert partials[0]._fingerprint() == partials[1]._fingerprint() != seeded._fingerprint()


async def test_a_seed_row_deleted_for_real_is_named_when_a_test_loads_it(server_url: str) -> None:
    (database,) = databases(server_url, "gw0")
    engine = await database.create()
    try:
        async with engine.begin() as connection:  # what a real commit elsewhere could do
            await connection.execute(Contact.__table__.delete())
            await connection.execute(Campaign.__table__.delete())
        async with rollback_scope(engine) as session:
            with pytest.raises(
                SchemaError, match=r"^Seeded '(acme|contacts)' \(.*\) is gone from the test database"
            ):
                await load_seeded(session)
    finally:
        await database.drop()
