"""The example suite: the patterns of our users' integration tests, on harness's database capability."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from app import service
from app.models import Campaign, CampaignSend, Contact
from factories import ContactFactory
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from harness import Clock, ConcurrentSessionError, assert_completes_within
from harness.queries import assert_max_queries, assert_no_n_plus_one


class TestCampaignEndpoints:
    async def test_create_campaign_full_flow(
        self, client: httpx.AsyncClient, db_session: AsyncSession
    ) -> None:
        """Create through the API, see the row in the test's session, read it back through the API."""
        payload = {
            "name": "January Promo",
            "template_a": "Hi {name}!",
            "template_b": "Hello {name}!",
            "daily_limit": 125,
        }
        response = await client.post("/api/campaigns", json=payload)
        assert response.status_code == 201
        created = response.json()
        db_campaign = await db_session.get(Campaign, created["id"])
        assert db_campaign is not None
        assert db_campaign.name == "January Promo"
        fetched = await client.get(f"/api/campaigns/{created['id']}")
        assert fetched.json() == {"id": created["id"], "name": "January Promo", "daily_limit": 125}

    async def test_each_test_starts_with_an_empty_database(self, db_session: AsyncSession) -> None:
        """The campaign committed through the API by the previous test is gone."""
        assert await db_session.scalar(select(func.count()).select_from(Campaign)) == 0

    async def test_validation_error_format(self, client: httpx.AsyncClient) -> None:
        """A body over max_length is a 422 with FastAPI's error list."""
        response = await client.post(
            "/api/campaigns", json={"name": "x" * 201, "template_a": "a", "template_b": "b"}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "string_too_long"


class TestCampaignService:
    @pytest.mark.clock("2024-01-15 10:00 America/New_York")  # a Monday morning: open for business
    async def test_execution_respects_the_daily_limit(
        self,
        app_bound: None,
        db_session: AsyncSession,
        campaign_with_contacts: Campaign,
        contact_factory: type[ContactFactory],
    ) -> None:
        """200 contacts with a limit of 125: 125 sent, 75 queued, committed by the service's own session."""
        await contact_factory.create_batch(190, campaign=campaign_with_contacts)
        async with assert_completes_within(5.0):  # a budget with room: one run of the block
            result = await service.execute_campaign(campaign_with_contacts.id)
        assert result == {"sent": 125, "queued": 75}
        sent = await db_session.scalar(
            select(func.count())
            .select_from(CampaignSend)
            .where(CampaignSend.campaign_id == campaign_with_contacts.id, CampaignSend.status == "sent")
        )
        assert sent == 125

    @pytest.mark.parametrize(
        ("now", "opening"),
        [
            (
                "2024-01-15 20:00",
                datetime(2024, 1, 16, 9, tzinfo=ZoneInfo("America/New_York")),
            ),  # Monday 8 PM
            (
                "2024-01-19 20:00",
                datetime(2024, 1, 22, 9, tzinfo=ZoneInfo("America/New_York")),
            ),  # Friday 8 PM
            ("2024-01-16 07:30", datetime(2024, 1, 16, 9, tzinfo=ZoneInfo("America/New_York"))),  # before 9
        ],
    )
    async def test_business_hours_queueing(
        self,
        app_bound: None,
        db_session: AsyncSession,
        campaign_with_contacts: Campaign,
        clock: Clock,
        now: str,
        opening: datetime,
    ) -> None:
        """Outside business hours (New York time) every message waits for the next opening at 9 AM."""
        clock.move_to(f"{now} America/New_York")
        result = await service.execute_campaign(campaign_with_contacts.id)
        assert result == {"sent": 0, "queued": 10}
        queued = (await db_session.scalars(select(CampaignSend.scheduled_for))).all()
        # UTC in the database; SQLite returns it without its offset
        assert {when.replace(tzinfo=UTC) if when.tzinfo is None else when for when in queued} == {opening}  # type: ignore[union-attr]

    async def test_listing_campaigns_has_a_query_budget(
        self, db_session: AsyncSession, campaign_with_contacts: Campaign
    ) -> None:
        """The list endpoint's query runs in two statements, and does not grow with the data."""
        with assert_max_queries(db_session, 2):
            listed = await service.list_campaigns(db_session)
        assert listed[0]["contacts"] == 10

        async def more_campaigns(session: AsyncSession, n: int) -> None:
            session.add_all(
                Campaign(
                    name=f"c{i}",
                    template_a="a",
                    template_b="b",
                    contacts=[Contact(phone=f"+1557{i:07d}", name="n")],
                )
                for i in range(n)
            )

        await assert_no_n_plus_one(db_session, more_campaigns, service.list_campaigns)

    async def test_concurrent_service_calls_on_one_test_connection_are_reported(
        self, app_bound: None, campaign_with_contacts: Campaign
    ) -> None:
        """gather over the service's sessions on the shared test connection fails with one clear error."""
        with pytest.raises(ConcurrentSessionError, match=r"asyncio\.gather over sessions"):
            await asyncio.gather(
                service.execute_campaign(campaign_with_contacts.id),
                service.execute_campaign(campaign_with_contacts.id),
            )


class TestDatabaseTransactions:
    async def test_rollback_on_integrity_error(
        self, db_session: AsyncSession, campaign_with_contacts: Campaign
    ) -> None:
        """A duplicate phone inside session.begin_nested() rolls back that block only."""
        taken = campaign_with_contacts.contacts[0].phone
        with pytest.raises(IntegrityError):
            async with db_session.begin_nested():
                db_session.add(Contact(phone=taken, name="Duplicate", campaign=campaign_with_contacts))
                await db_session.flush()
        assert await db_session.scalar(select(func.count()).select_from(Contact)) == 10

    async def test_cascade_deletes(self, db_session: AsyncSession, campaign_with_contacts: Campaign) -> None:
        """Deleting a campaign deletes its contacts and sends (foreign keys are on, on SQLite too)."""
        await db_session.execute(
            text("DELETE FROM campaigns WHERE id = :id"), {"id": campaign_with_contacts.id}
        )
        await db_session.commit()
        assert await db_session.scalar(select(func.count()).select_from(Contact)) == 0

    async def test_rows_from_before_a_new_column_read_back_as_none(self, db_session: AsyncSession) -> None:
        """Backward compatibility: a row inserted without the newer `summary` column has summary None."""
        await db_session.execute(
            text(
                "INSERT INTO campaigns (name, template_a, template_b, daily_limit) VALUES ('old', 'a', 'b', 10)"
            )
        )
        await db_session.commit()
        listed = await service.list_campaigns(db_session)
        assert listed == [{"id": listed[0]["id"], "name": "old", "contacts": 0, "summary": None}]
