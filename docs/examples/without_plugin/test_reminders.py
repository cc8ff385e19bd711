"""Tests on the hand-written conftest.py: isolated writes, a mocked API and a frozen clock."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

# --8<-- [start:test]
from app.db import Campaign, Contact
from app.reminders import send_reminders
from harness import freeze_time


async def test_reminders_wait_for_business_hours(session, sms_api):
    campaign = Campaign(name="spring", contacts=[Contact(phone="+15550001"), Contact(phone="+15550002")])
    session.add(campaign)
    await session.commit()  # a savepoint: the test's transaction is rolled back all the same
    with freeze_time("2024-01-15 20:00 America/New_York") as clock:  # a Monday, 8 PM
        assert await send_reminders(session, campaign.id) == 0
        clock.move_to("2024-01-16 09:00 America/New_York")
        assert await send_reminders(session, campaign.id) == 2
    sms_api.send_message.assert_called_times(2)


async def test_each_test_starts_from_an_empty_database(session):
    assert await session.scalar(select(func.count()).select_from(Contact)) == 0


# --8<-- [end:test]


def test_time_is_real_outside_the_block():
    assert dt.date.today().year > 2024


def test_the_harness_plugin_is_off(pytestconfig):
    """What this folder shows is harness by hand: none of the plugin's fixtures are at work."""
    assert not pytestconfig.pluginmanager.has_plugin("harness")
