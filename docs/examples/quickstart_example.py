"""The quick start: one test that uses the database, a factory, an API mock and the clock."""

from __future__ import annotations

import datetime as dt

import factory
from app import Campaign, Contact
from sqlalchemy import func, select

from harness import ModelFactory


# --8<-- [start:factories]
class CampaignFactory(ModelFactory[Campaign]):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")

    @factory.post_generation
    async def contacts(self, create, extracted, **kwargs):
        if create and extracted:  # CampaignFactory.create(contacts=2)
            await ContactFactory.create_batch(extracted, campaign=self)


class ContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+1555{n:07d}")
    campaign = factory.SubFactory(CampaignFactory)


# --8<-- [end:factories]


# --8<-- [start:test]
import pytest
from reminders import send_reminders


@pytest.mark.clock("2024-01-15 20:00 America/New_York")  # a Monday, 8 PM
async def test_reminders_wait_for_business_hours(db_session, sms_api, clock):
    campaign = await CampaignFactory.create(contacts=2)  # rows in the test's transaction
    assert await send_reminders(db_session, campaign.id) == 0  # after hours: nothing sent
    clock.move_to("2024-01-16 09:00 America/New_York")
    assert await send_reminders(db_session, campaign.id) == 2
    sms_api.send_message.assert_called_times(2)  # and no request left the machine


# --8<-- [end:test]


async def test_the_rows_are_gone_after_the_test(db_session):
    """The quick start's rows do not outlive it, and time is real again."""
    assert await db_session.scalar(select(func.count()).select_from(Contact)) == 0
    assert dt.date.today().year > 2024
