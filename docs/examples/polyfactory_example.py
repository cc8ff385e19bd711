"""polyfactory: its SQLAlchemyFactory, persisting through the test's session."""

from __future__ import annotations

# --8<-- [start:polyfactory]
from app import Campaign, Contact
from harness.polyfactory import SQLAlchemyFactory  # instead of polyfactory's own


class ContactFactory(SQLAlchemyFactory[Contact]):
    __set_relationships__ = True  # build a campaign for each contact


class CampaignFactory(SQLAlchemyFactory[Campaign]):
    __set_relationships__ = False  # no contacts but the test's


async def test_import_batch(db_session):
    """Flushed through db_session, rolled back after the test; ids come from the database."""
    contacts = await ContactFactory.create_batch_async(150)
    assert len({contact.id for contact in contacts}) == 150

    campaign = await CampaignFactory.create_async(daily_limit=10)
    await ContactFactory.create_batch_async(3, campaign=campaign)
    assert len(campaign.contacts) == 3  # loaded: no MissingGreenlet


# --8<-- [end:polyfactory]
