"""harness.queries: statement counts exclude bookkeeping, failures show the SQL, N+1 patterns are caught."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from harness.queries import assert_max_queries, assert_no_n_plus_one, assert_num_queries, capture_queries
from tests.models import Campaign, Contact


async def add_campaigns(session: AsyncSession, n: int) -> None:
    session.add_all(Campaign(name=f"c{i}", contacts=[Contact(phone=f"+1555{i:07d}")]) for i in range(n))
    await session.flush()


async def test_capture_counts_statements_but_not_transaction_bookkeeping(db_session: AsyncSession) -> None:
    """Commits and savepoints do not count; the INSERT and the SELECT do."""
    with capture_queries(db_session) as log:
        db_session.add(Campaign(name="counted"))
        await db_session.commit()
        await db_session.scalars(select(Campaign))
    assert log.count == 2
    assert log.statements[0].startswith("INSERT INTO campaigns")
    assert log.statements[1].startswith("SELECT campaigns.id")


async def test_assert_num_queries_passes_on_the_exact_count(db_session: AsyncSession) -> None:
    """An exact match passes and returns the log."""
    with assert_num_queries(db_session, 1) as log:
        await db_session.scalars(select(Campaign))
    assert len(log) == 1


async def test_assert_num_queries_failure_lists_the_sql(db_session: AsyncSession) -> None:
    """The failure says expected and actual, then each statement with its parameters."""
    with pytest.raises(AssertionError) as excinfo, assert_num_queries(db_session, 1):
        await db_session.scalars(select(Campaign).where(Campaign.name == "a"))
        await db_session.scalars(select(Contact).where(Contact.phone == "+1"))
    lines = str(excinfo.value).splitlines()
    assert lines[0] == "Expected 1 queries but the block ran 2:"
    assert lines[1].startswith(
        "1. SELECT campaigns.id, campaigns.name, campaigns.daily_limit FROM campaigns WHERE campaigns.name = "
    )
    assert lines[2].strip().startswith("parameters: ")
    assert "'a'" in lines[2]
    assert lines[3].startswith("2. SELECT contacts.id")


async def test_assert_max_queries_allows_fewer_and_fails_on_more(db_session: AsyncSession) -> None:
    """A budget is an upper bound."""
    with assert_max_queries(db_session, 3):
        await db_session.scalars(select(Campaign))
    with (
        pytest.raises(AssertionError, match=r"^Expected at most 0 queries but the block ran 1:\n1\. SELECT"),
        assert_max_queries(db_session, 0),
    ):
        await db_session.scalars(select(Campaign))


async def test_a_failing_budget_groups_repeats_and_names_the_n_plus_one(db_session: AsyncSession) -> None:
    """A run of one statement is one line with its count; three or more repeats get the N+1 advice."""
    await add_campaigns(db_session, 3)
    db_session.expunge_all()
    with pytest.raises(AssertionError) as excinfo, assert_max_queries(db_session, 2):
        campaigns = (await db_session.scalars(select(Campaign).order_by(Campaign.id))).all()
        for campaign in campaigns:
            await db_session.scalars(select(Contact).where(Contact.campaign_id == campaign.id))
    message = str(excinfo.value)
    lines = message.splitlines()
    assert lines[0] == "Expected at most 2 queries but the block ran 4:"
    assert lines[1].startswith("1. SELECT campaigns.id")
    assert lines[3].startswith("2-4 (3 times). SELECT contacts.id")
    assert len(lines) == 7  # two statements with their parameter lines, a blank line, the advice
    assert message.endswith(
        "One statement ran 3 times with different parameters: the shape of an N+1 query (a lazy relationship "
        "loaded once per row). Load it in the first query with selectinload()/joinedload(), or check with "
        "assert_no_n_plus_one()."
    )


async def test_repeats_that_are_not_lookups_per_row_give_no_n_plus_one_advice(
    db_session: AsyncSession,
) -> None:
    """Different statements, one SELECT run thrice with the same parameters, or INSERTs: no N+1 hint."""
    with pytest.raises(AssertionError) as excinfo, assert_num_queries(db_session, 1):
        await db_session.scalars(select(Campaign))
        await db_session.scalars(select(Contact))
        for _ in range(3):
            await db_session.scalars(select(Contact).where(Contact.phone == "+1"))
        for n in range(3):
            db_session.add(Campaign(name=f"c{n}"))
            await db_session.flush()
    assert "N+1" not in str(excinfo.value)
    assert "3-5 (3 times). SELECT contacts.id" in str(excinfo.value)


async def test_n_plus_one_is_caught(db_session: AsyncSession) -> None:
    """Lazy loading per row makes the count grow with the data: the check fails with both logs."""

    async def list_with_lazy_contacts(session: AsyncSession) -> None:
        for campaign in (await session.scalars(select(Campaign))).all():
            await campaign.awaitable_attrs.contacts

    with pytest.raises(AssertionError) as excinfo:
        await assert_no_n_plus_one(db_session, add_campaigns, list_with_lazy_contacts, sizes=(2, 5))
    assert str(excinfo.value).startswith(
        "N+1 queries: the block ran 3 queries for 2 rows and 6 for 5; the count should not grow with the data."
    )


async def test_eager_loading_passes_the_n_plus_one_check(db_session: AsyncSession) -> None:
    """selectinload keeps the count constant; each size ran in its own rolled-back scope."""

    async def list_with_eager_contacts(session: AsyncSession) -> None:
        campaigns = (await session.scalars(select(Campaign).options(selectinload(Campaign.contacts)))).all()
        assert all(len(c.contacts) == 1 for c in campaigns)

    small, large = await assert_no_n_plus_one(db_session, add_campaigns, list_with_eager_contacts)
    assert small.count == large.count == 2
    assert (await db_session.scalars(select(Campaign))).all() == []


async def test_n_plus_one_sizes_must_increase(db_session: AsyncSession) -> None:
    """Bad sizes are a ValueError naming the expected form."""

    async def run(_session: AsyncSession) -> None:
        pass

    with pytest.raises(
        ValueError, match=r"^sizes must be two increasing positive sizes such as \(2, 8\), got \(5, 5\)\.$"
    ):
        await assert_no_n_plus_one(db_session, add_campaigns, run, sizes=(5, 5))


def test_capture_rejects_what_is_not_a_bind() -> None:
    """A wrong argument is a TypeError naming what is accepted."""
    with pytest.raises(TypeError) as excinfo, capture_queries("engine"):  # type: ignore[arg-type]
        pass
    assert excinfo.value.args == (
        "capture_queries() takes an AsyncEngine, AsyncConnection or AsyncSession, got str.",
    )
