"""The seeds' campaign suites on harness: endpoints, the API contract, the service, transactions, performance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from factories import CampaignFactory, ContactFactory, UserFactory
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import service
from app.models import Campaign, CampaignSend, Contact
from harness import (
    ConcurrentSessionError,
    IntegrationTest,
    RealCommitsTest,
    assert_no_n_plus_one,
    auth_headers,
)

category = pytest.mark.category
NEW_YORK = ZoneInfo("America/New_York")
PAYLOAD = {
    "name": "January Promo",
    "template_a": "Hi {name}!",
    "template_b": "Hello {name}!",
    "daily_limit": 125,
}


async def count(session: AsyncSession, model: type, *where: object) -> int:
    return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


class TestCampaignEndpoints(IntegrationTest):
    """The API with the full stack: the app's own sessions write into the test's rollback scope."""

    @category("end-to-end")
    async def test_create_campaign_full_flow(self, auth_headers: dict[str, str]) -> None:
        """Create through the API, see the row in the test's session, read it back through the API."""
        response = await self.client.post("/api/campaigns", json=PAYLOAD, headers=auth_headers)
        assert response.status_code == 201
        created = response.json()
        db_campaign = await self.db.get(Campaign, created["id"])
        assert db_campaign is not None
        assert db_campaign.name == "January Promo"
        fetched = await self.client.get(f"/api/campaigns/{created['id']}", headers=auth_headers)
        assert fetched.json() == created

    @category("end-to-end")
    async def test_campaign_csv_upload_integration(
        self, auth_headers: dict[str, str], csv_file: bytes
    ) -> None:
        """100 contacts from a CSV land on the campaign."""
        created = await self.client.post("/api/campaigns", json=PAYLOAD, headers=auth_headers)
        campaign_id = created.json()["id"]
        upload = await self.client.upload(
            f"/api/campaigns/{campaign_id}/upload", csv_file, filename="contacts.csv", headers=auth_headers
        )
        assert upload.status_code == 200
        assert upload.json() == {"imported": 100}
        assert await count(self.db, Contact, Contact.campaign_id == campaign_id) == 100

    async def test_each_test_starts_with_an_empty_database(self) -> None:
        """The campaign committed through the API by an earlier test is gone."""
        assert await count(self.db, Campaign) == 0

    @category("validation")
    async def test_requests_without_a_known_token_are_refused(self) -> None:
        """No token, or a token of no user: 401, nothing stored."""
        assert (await self.client.post("/api/campaigns", json=PAYLOAD)).status_code == 401
        refused = await self.client.post("/api/campaigns", json=PAYLOAD, headers=auth_headers("nope"))
        assert refused.status_code == 401
        assert await count(self.db, Campaign) == 0


class TestApiContract(IntegrationTest):
    """Response shapes and error formats, against a user and a campaign made once for the class."""

    @classmethod
    async def setup_class_data(cls, session: AsyncSession) -> None:
        cls.user = await UserFactory.create()
        cls.campaign = await CampaignFactory.create(name="Shared", contacts=3)

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.user.api_token)

    @category("validation")
    async def test_campaign_response_has_the_documented_fields_and_types(self) -> None:
        """GET /api/campaigns/{id} returns every field with its type."""
        body = (await self.client.get(f"/api/campaigns/{self.campaign.id}", headers=self.headers)).json()
        assert set(body) == {"id", "name", "template_a", "template_b", "daily_limit", "summary"}
        assert isinstance(body["id"], int)
        assert isinstance(body["daily_limit"], int)
        assert body["name"] == "Shared"

    @category("validation")
    async def test_invalid_body_is_a_422_with_a_list_of_errors(self) -> None:
        """FastAPI's error format: `detail` is a list naming each missing field."""
        response = await self.client.post("/api/campaigns", json={"invalid": "data"}, headers=self.headers)
        assert response.status_code == 422
        missing = {error["loc"][-1] for error in response.json()["detail"] if error["type"] == "missing"}
        assert missing == {"name", "template_a", "template_b"}

    @category("edge-cases", "validation")
    async def test_name_at_max_length_is_accepted_and_one_over_is_refused(self) -> None:
        """200 characters are stored whole; 201 are a 422 string_too_long."""
        at_limit = await self.client.post(
            "/api/campaigns", json={**PAYLOAD, "name": "x" * 200}, headers=self.headers
        )
        assert at_limit.status_code == 201
        stored = await self.db.get(Campaign, at_limit.json()["id"])
        assert stored is not None
        assert len(stored.name) == 200
        over = await self.client.post(
            "/api/campaigns", json={**PAYLOAD, "name": "x" * 201}, headers=self.headers
        )
        assert over.status_code == 422
        assert over.json()["detail"][0]["type"] == "string_too_long"

    @category("null-handling")
    @pytest.mark.parametrize(
        "body", [{**PAYLOAD, "summary": None}, PAYLOAD], ids=["explicit-none", "omitted"]
    )
    async def test_summary_is_optional_and_stored_as_null(self, body: dict[str, object]) -> None:
        """`summary` given as null or left out is NULL in the database and null in the response."""
        response = await self.client.post("/api/campaigns", json=body, headers=self.headers)
        assert response.json()["summary"] is None
        stored = await self.db.get(Campaign, response.json()["id"])
        assert stored is not None
        assert stored.summary is None

    @category("edge-cases")
    async def test_changes_to_class_data_do_not_reach_the_next_test(self) -> None:
        """A test renames the shared campaign and deletes a contact; its savepoint takes both away."""
        self.campaign.name = "Renamed"
        await self.db.delete(self.campaign.contacts[0])
        await self.db.commit()
        assert await count(self.db, Contact) == 2

    async def test_class_data_is_intact(self) -> None:
        """Whatever order the tests ran in, the shared data is as setup_class_data made it."""
        assert self.campaign.name == "Shared"
        assert await count(self.db, Contact) == 3


class TestCampaignService(IntegrationTest):
    """The service with the real database: it opens its own sessions from the app's sessionmaker."""

    @category("end-to-end")
    @pytest.mark.clock("2024-01-15 10:00 America/New_York")  # a Monday morning: open for business
    async def test_execution_respects_the_daily_limit(self, campaign_with_contacts: Campaign) -> None:
        """200 contacts with a limit of 125: 125 sent, 75 queued, committed by the service's own session."""
        await ContactFactory.create_batch(190, campaign=campaign_with_contacts)
        async with self.assert_completes_within(5.0):  # a budget with room: one run of the block
            result = await service.execute_campaign(campaign_with_contacts.id)
        assert result == {"sent": 125, "queued": 75}
        sent = CampaignSend.campaign_id == campaign_with_contacts.id, CampaignSend.status == "sent"
        assert await count(self.db, CampaignSend, *sent) == 125

    @category("edge-cases")
    @pytest.mark.parametrize(
        ("now", "opening"),
        [
            ("2024-01-15 20:00", datetime(2024, 1, 16, 9, tzinfo=NEW_YORK)),  # Monday 8 PM
            ("2024-01-19 20:00", datetime(2024, 1, 22, 9, tzinfo=NEW_YORK)),  # Friday 8 PM
            ("2024-01-16 07:30", datetime(2024, 1, 16, 9, tzinfo=NEW_YORK)),  # before 9
        ],
    )
    @pytest.mark.clock
    async def test_business_hours_queueing(
        self, campaign_with_contacts: Campaign, now: str, opening: datetime
    ) -> None:
        """Outside business hours (New York time) every message waits for the next opening at 9 AM."""
        self.clock.move_to(f"{now} America/New_York")
        result = await service.execute_campaign(campaign_with_contacts.id)
        assert result == {"sent": 0, "queued": 10}
        queued = (await self.db.scalars(select(CampaignSend.scheduled_for))).all()
        # UTC in the database; SQLite returns it without its offset
        assert {when.replace(tzinfo=UTC) if when.tzinfo is None else when for when in queued} == {opening}  # type: ignore[union-attr]

    @category("performance")
    async def test_listing_campaigns_has_a_query_budget(self, campaign_with_contacts: Campaign) -> None:
        """The list query runs in two statements, and does not grow with the data."""
        with self.assert_max_queries(2):
            listed = await service.list_campaigns(self.db)
        assert listed[0]["contacts"] == 10

        async def more_campaigns(session: AsyncSession, n: int) -> None:
            await CampaignFactory.create_batch(n, contacts=1)

        await assert_no_n_plus_one(self.db, more_campaigns, service.list_campaigns)

    @category("edge-cases")
    async def test_concurrent_service_calls_on_one_test_connection_are_reported(
        self, campaign_with_contacts: Campaign
    ) -> None:
        """gather over the service's sessions on the shared test connection fails with one clear error."""
        with pytest.raises(ConcurrentSessionError, match=r"asyncio\.gather over sessions"):
            await asyncio.gather(
                service.execute_campaign(campaign_with_contacts.id),
                service.execute_campaign(campaign_with_contacts.id),
            )


class TestConcurrentExecutions(RealCommitsTest):
    """Concurrency needs real connections: commits are real, and the rows added are deleted after."""

    @category("end-to-end")
    @pytest.mark.clock("2024-01-15 10:00 America/New_York")
    async def test_campaigns_execute_concurrently(self) -> None:
        """Three campaigns executed with asyncio.gather, each in its own session and connection."""
        campaigns = [await CampaignFactory.create(daily_limit=3, contacts=5) for _ in range(3)]
        await self.db.commit()
        results = await asyncio.gather(*(service.execute_campaign(c.id) for c in campaigns))
        assert results == [{"sent": 3, "queued": 2}] * 3
        assert await count(self.db, CampaignSend, CampaignSend.status == "sent") == 9

    async def test_the_committed_rows_are_gone(self) -> None:
        """After a real-commit test, the tables it wrote to are as they were."""
        assert await count(self.db, Campaign) == 0
        assert await count(self.db, CampaignSend) == 0


class TestDatabaseTransactions(IntegrationTest):
    """Transactions, constraints and old data."""

    @category("validation")
    async def test_rollback_on_integrity_error(self, campaign_with_contacts: Campaign) -> None:
        """A duplicate phone inside session.begin_nested() rolls back that block only."""
        taken = campaign_with_contacts.contacts[0].phone
        with pytest.raises(IntegrityError):
            async with self.db.begin_nested():
                self.db.add(Contact(phone=taken, name="Duplicate", campaign=campaign_with_contacts))
                await self.db.flush()
        assert await count(self.db, Contact) == 10

    @category("end-to-end")
    @pytest.mark.clock("2024-01-15 10:00 America/New_York")
    async def test_cascade_deletes(self, campaign_with_contacts: Campaign) -> None:
        """Deleting a campaign deletes its contacts and sends (foreign keys are on, on SQLite too)."""
        await service.execute_campaign(campaign_with_contacts.id)
        assert await count(self.db, CampaignSend) == 10
        await self.db.execute(text("DELETE FROM campaigns WHERE id = :id"), {"id": campaign_with_contacts.id})
        await self.db.commit()
        assert await count(self.db, Contact) == 0
        assert await count(self.db, CampaignSend) == 0

    @category("backward-compatibility", "null-handling")
    async def test_rows_from_before_a_new_column_read_back_as_none(
        self, auth_headers: dict[str, str]
    ) -> None:
        """A row inserted without the newer `summary` column has summary None, in the service and the API."""
        await self.db.execute(
            text(
                "INSERT INTO campaigns (name, template_a, template_b, daily_limit) VALUES ('old', 'a', 'b', 10)"
            )
        )
        await self.db.commit()
        listed = await service.list_campaigns(self.db)
        assert listed == [{"id": listed[0]["id"], "name": "old", "contacts": 0, "summary": None}]
        served = await self.client.get(f"/api/campaigns/{listed[0]['id']}", headers=auth_headers)
        assert served.json()["summary"] is None


class TestPerformance(IntegrationTest):
    """The seeds' performance targets as budgets that hold on a noisy machine."""

    @category("performance")
    async def test_csv_import_performance(self, auth_headers: dict[str, str], large_csv: bytes) -> None:
        """5,000 contacts import in under 5 seconds."""
        campaign = await CampaignFactory.create()
        async with self.assert_completes_within(5.0):
            response = await self.client.upload(
                f"/api/campaigns/{campaign.id}/upload", large_csv, filename="large.csv", headers=auth_headers
            )
        assert response.json() == {"imported": 5000}
        assert await count(self.db, Contact) == 5000

    @category("performance")
    @pytest.mark.parametrize("endpoint", ["/api/campaigns", "/api/campaigns/{id}"])
    async def test_api_response_time(
        self, auth_headers: dict[str, str], campaign_with_contacts: Campaign, endpoint: str
    ) -> None:
        """The read endpoints answer within 200 ms: their median, sampled until that is clear."""
        url = endpoint.format(id=campaign_with_contacts.id)
        await self.assert_runs_within(lambda: self.client.get(url, headers=auth_headers), 0.2)
        assert (await self.client.get(url, headers=auth_headers)).status_code == 200
