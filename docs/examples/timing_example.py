"""Timing budgets: one run of a block, the median of samples, and a budget relative to a baseline."""

from __future__ import annotations

# --8<-- [start:budgets]
from harness import assert_completes_within, assert_not_slower_than, assert_runs_within


async def test_csv_import_of_5000_rows(app_client, large_csv, db_session):
    """5,000 contacts are imported in under 5 s and 20 queries."""
    # one run of a block, against a budget with room, and a query budget in the same check
    async with assert_completes_within(5.0, max_queries=20):
        response = await app_client.post(
            "/api/import/csv", files={"file": ("big.csv", large_csv, "text/csv")}
        )
    assert response.json()["imported"] == 5000


async def test_campaign_list_latency(app_client):
    """The campaign list answers within 200 ms: its median, sampled until that is clear."""
    await assert_runs_within(lambda: app_client.get("/api/campaigns"), 0.2)


async def test_a_long_campaign_list_costs_at_most_three_short_ones(app_client, many_campaigns):
    """100 campaigns cost at most 3x one: the list grows with its rows, not with a query per row."""
    # both sides do the same kind of work (a request and its two queries): load slows them alike
    await assert_not_slower_than(
        lambda: app_client.get("/api/campaigns?limit=100"),
        lambda: app_client.get("/api/campaigns?limit=1"),
        factor=3,
    )


# --8<-- [end:budgets]


import asyncio

import pytest
from sqlalchemy import select

import app
from app import Campaign, Contact


@pytest.fixture
async def large_csv(db_session):
    """A CSV of 5,000 contacts for a new campaign."""
    campaign = Campaign(name="Imported")
    db_session.add(campaign)
    await db_session.flush()
    rows = "".join(f"+1555{n:07d},{campaign.id}\n" for n in range(5000))
    return f"phone,campaign_id\n{rows}".encode()


@pytest.fixture
async def many_campaigns(db_session):
    """100 campaigns of one contact each."""
    db_session.add_all(
        Campaign(name=f"Campaign {n}", contacts=[Contact(phone=f"+1666{n:07d}")]) for n in range(100)
    )
    await db_session.flush()


async def test_the_relative_budget_catches_a_query_per_campaign(app_client, many_campaigns, monkeypatch):
    """The regression the budget is for: contacts loaded with a query per campaign (an N+1) fail it."""

    async def a_query_per_campaign(session, limit=None):
        campaigns = (await session.scalars(select(Campaign).order_by(Campaign.id).limit(limit))).all()
        return [
            {"id": c.id, "name": c.name, "contacts": len(await c.awaitable_attrs.contacts)} for c in campaigns
        ]

    monkeypatch.setattr(app, "list_campaigns", a_query_per_campaign)
    with pytest.raises(AssertionError, match=r"is slower than 3x the baseline"):
        await test_a_long_campaign_list_costs_at_most_three_short_ones(app_client, many_campaigns)


async def test_the_latency_budget_catches_a_slower_list(app_client, monkeypatch):
    """A list that waits 300 ms longer (a slow query, say) fails the 200 ms budget, load or not."""
    original = app.list_campaigns

    async def slower(session, limit=None):
        await asyncio.sleep(0.3)
        return await original(session, limit)

    monkeypatch.setattr(app, "list_campaigns", slower)
    with pytest.raises(AssertionError, match=r"is over its budget of 200\.0 ms"):
        await test_campaign_list_latency(app_client)
