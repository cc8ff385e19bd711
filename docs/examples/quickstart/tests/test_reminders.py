# --8<-- [start:test]
import pytest

from app.db import Campaign
from app.reminders import send_reminders
from tests.factories import CampaignFactory


@pytest.mark.clock("2024-01-15 20:00 America/New_York")  # a Monday, 8 PM
async def test_reminders_wait_for_business_hours(db_session, sms_api, clock):
    campaign = await CampaignFactory.create(contacts=2)  # rows in the test's transaction
    assert await send_reminders(db_session, campaign.id) == 0  # after hours: nothing sent
    clock.move_to("2024-01-16 09:00 America/New_York")
    assert await send_reminders(db_session, campaign.id) == 2
    sms_api.send_message.assert_called_times(2)  # and no request left the machine


async def test_a_campaign_made_through_the_api_is_stored(app_client, db_session):
    response = await app_client.post("/campaigns", json={"name": "January"})  # get_db commits
    assert response.status_code == 201
    assert await db_session.get(Campaign, response.json()["id"]) is not None


# --8<-- [end:test]


async def test_the_rows_are_gone_after_each_test(db_session):
    """Whatever the tests above wrote (the API's commit included) was rolled back."""
    from sqlalchemy import func, select

    assert await db_session.scalar(select(func.count()).select_from(Campaign)) == 0
