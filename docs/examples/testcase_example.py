"""The base test classes: attributes, class-level data and real commits."""

from __future__ import annotations

import asyncio

from factories_example import CampaignWithContactsFactory as CampaignFactory
from sqlalchemy import func, select

from app import Campaign, Contact, SessionLocal

# --8<-- [start:class]
from harness import IntegrationTest


class TestCampaignApi(IntegrationTest):
    async def test_create(self):
        response = await self.client.post("/api/campaigns", json={"name": "January"})
        assert response.status_code == 201
        assert await self.db.get(Campaign, response.json()["id"]) is not None

    async def test_fixtures_still_work(self, db_session, sms_api):
        assert db_session is self.db  # one session: the attribute is the fixture


# --8<-- [end:class]


# --8<-- [start:class_data]
class TestCampaignReports(IntegrationTest):
    @classmethod
    async def setup_class_data(cls, session):
        cls.campaign = await CampaignFactory.create(name="Shared", contacts=50)

    async def test_rename(self):
        self.campaign.name = "Renamed"  # a fresh instance, in this test's session
        await self.db.commit()

    async def test_sees_the_original(self):
        assert self.campaign.name == "Shared"
        assert len(self.campaign.contacts) == 50


# --8<-- [end:class_data]


# --8<-- [start:real_commits]
from harness import RealCommitsTest


class TestParallelImports(RealCommitsTest):
    async def test_imports_run_side_by_side(self):
        campaign = await CampaignFactory.create()
        await self.db.commit()  # real: the other connections must see it

        async def import_contacts(first):
            async with SessionLocal() as session:  # its own connection
                session.add_all(
                    Contact(phone=f"+1666{first + i:07d}", campaign_id=campaign.id) for i in range(10)
                )
                await session.commit()

        await asyncio.gather(import_contacts(0), import_contacts(100))
        assert await self.db.scalar(select(func.count()).select_from(Contact)) == 20


# --8<-- [end:real_commits]


class TestAfterRealCommits(IntegrationTest):
    async def test_the_committed_rows_were_deleted(self):
        """What TestParallelImports committed for real is gone."""
        assert await self.db.scalar(select(func.count()).select_from(Contact)) == 0
