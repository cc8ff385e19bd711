"""Timing budgets: one run of a block, the median of samples, and a budget relative to a baseline."""

from __future__ import annotations

# --8<-- [start:budgets]
from harness import assert_completes_within, assert_not_slower_than, measure


async def test_csv_import_of_5000_rows(app_client, large_csv, db_session):
    """5,000 contacts are imported in under 5 s and 20 queries."""
    # one run of a block, against a budget with room, and a query budget in the same check
    async with assert_completes_within(5.0, max_queries=20):
        response = await app_client.post(
            "/api/import/csv", files={"file": ("big.csv", large_csv, "text/csv")}
        )
    assert response.json()["imported"] == 5000


async def test_campaign_list_latency(app_client):
    """The median of five requests stays under 200 ms."""
    timing = await measure(lambda: app_client.get("/api/campaigns"))  # 1 warm-up + 5 samples
    timing.assert_within(0.2)  # their median; statistic="p95" or "min" to choose


async def test_campaign_list_costs_at_most_ten_health_checks(app_client):
    """A request with a database query costs at most ten requests that do nothing."""
    # measured interleaved in this run, on this machine: holds on a laptop and a slow runner alike
    await assert_not_slower_than(
        lambda: app_client.get("/api/campaigns"),
        lambda: app_client.get("/health"),
        factor=10,
    )


# --8<-- [end:budgets]


import pytest
from app import Campaign


@pytest.fixture
async def large_csv(db_session):
    """A CSV of 5,000 contacts for a new campaign."""
    campaign = Campaign(name="Imported")
    db_session.add(campaign)
    await db_session.flush()
    rows = "".join(f"+1555{n:07d},{campaign.id}\n" for n in range(5000))
    return f"phone,campaign_id\n{rows}".encode()
