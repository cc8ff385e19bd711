"""Factories: factory-boy factories whose creation is awaited, through the test's session."""

from __future__ import annotations

# --8<-- [start:factories]
import factory

from app import Campaign, Contact
from harness import ModelFactory


class CampaignFactory(ModelFactory[Campaign]):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"campaign {n}")


class ContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+1555{n:07d}")
    campaign = factory.SubFactory(CampaignFactory)


async def test_daily_limit(db_session):
    """A batch of contacts is created under one campaign, whose collection is loaded."""
    campaign = await CampaignFactory.create(daily_limit=125)
    await ContactFactory.create_batch(200, campaign=campaign)
    assert len(campaign.contacts) == 200  # loaded: no MissingGreenlet


# --8<-- [end:factories]


# --8<-- [start:use_session]
from sqlalchemy.ext.asyncio import AsyncSession

from harness import use_session


async def test_a_session_of_your_own(db_engine):
    """Factories create through the session use_session() names."""
    async with AsyncSession(db_engine) as session:
        with use_session(session):
            contact = await ContactFactory.create()
        assert contact in session  # flushed there, never committed


# --8<-- [end:use_session]


# --8<-- [start:post_generation]
class CampaignWithContactsFactory(CampaignFactory):
    @factory.post_generation
    async def contacts(self, create, extracted, **kwargs):
        if create and extracted:
            await ContactFactory.create_batch(extracted, campaign=self)


async def test_an_async_hook_creates_the_contacts(db_session):
    """The async post_generation hook runs after the flush and awaits another factory."""
    campaign = await CampaignWithContactsFactory.create(contacts=10)
    assert len(campaign.contacts) == 10


# --8<-- [end:post_generation]


# --8<-- [start:register_factory]
from harness import register_factory

register_factory(ContactFactory)  # contact_factory, contact
register_factory(CampaignFactory, "small_campaign", daily_limit=10)  # small_campaign_factory, small_campaign


async def test_small_campaign(small_campaign, contact_factory):
    """The variant is created with its keyword arguments; the factory fixture creates more rows."""
    contacts = await contact_factory.create_batch(3, campaign=small_campaign)
    assert small_campaign.daily_limit == 10
    assert small_campaign.contacts == contacts


# --8<-- [end:register_factory]
