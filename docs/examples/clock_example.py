"""The clock: a frozen wall clock for a test, a block or a function, and advance() for code that waits."""

from __future__ import annotations

# --8<-- [start:intro]
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from harness import freeze_time

ET = ZoneInfo("America/New_York")


@pytest.mark.clock("2024-01-15 20:00 America/New_York")  # 8 PM in New York
async def test_after_hours_messages_wait_for_nine(clock, campaign_service, campaign):
    """At 8 PM the campaign's messages are queued for 9 AM the next morning."""
    result = await campaign_service.execute(campaign.id)
    assert result.queued == 10
    assert result.scheduled_for == dt.datetime(2024, 1, 16, 9, tzinfo=ET)


@freeze_time("2024-01-15 20:00", tz="America/New_York")  # decorator: sync or async functions
def test_decorated():
    """The wall time written is read in the zone given."""
    assert dt.datetime.now(ET).hour == 20


async def test_blocks():
    """A block freezes time, and tick() moves it."""
    with freeze_time("2024-01-15") as clock:  # or `async with`
        clock.tick(minutes=5)
        assert clock.now() == dt.datetime(2024, 1, 15, 0, 5, tzinfo=dt.UTC)


# --8<-- [end:intro]


# The code under test and the fixtures the tests above ask for (not shown on the page).
import asyncio
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select

from app import SMS_API, Campaign, Contact
from harness import Reply


@dataclass
class Queued:
    queued: int
    scheduled_for: dt.datetime


class CampaignService:
    """Queue a campaign's messages: now during sending hours (9 AM to 8 PM in New York), else for 9 AM."""

    def __init__(self, session):
        self.session = session

    async def execute(self, campaign_id):
        count = select(func.count()).select_from(Contact).where(Contact.campaign_id == campaign_id)
        now = dt.datetime.now(ET)
        at = now
        if now.hour >= 20:
            at = now + dt.timedelta(days=1)
        if not 9 <= now.hour < 20:
            at = at.replace(hour=9, minute=0, second=0, microsecond=0)
        return Queued(await self.session.scalar(count), at)


@pytest.fixture
def campaign_service(db_session):
    return CampaignService(db_session)


@pytest.fixture
async def campaign(db_session):
    campaign = Campaign(name="January", contacts=[Contact(phone=f"+1555000{n:04d}") for n in range(10)])
    db_session.add(campaign)
    await db_session.flush()
    return campaign


async def send_with_retry(to, text):
    """Send one message; on a 429, wait as long as Retry-After says and try again (three tries)."""
    async with httpx.AsyncClient(base_url=SMS_API) as http:
        for _ in range(3):
            response = await http.post("/messages", json={"to": to, "text": text})
            if response.status_code != 429:
                break
            await asyncio.sleep(int(response.headers["Retry-After"]))
        response.raise_for_status()
        return response.json()


# --8<-- [start:advance]
async def test_retry_after_a_rate_limit(clock, sms_api):
    """The 30 s back-off of a rate-limited send passes at once under advance()."""
    sms_api.send_message.respond(Reply.rate_limited(retry_after=30), 202)  # 429, then the usual 202
    sending = asyncio.create_task(send_with_retry("+15551234567", "hi"))
    await clock.advance(seconds=30)  # the 30 s back-off, in milliseconds of real time
    assert (await sending)["id"] == "msg_1"


# --8<-- [end:advance]


@pytest.fixture
def evening():
    """The wall time when the fixture runs."""
    return dt.datetime.now(ET)


@pytest.mark.clock("2024-01-15 20:00 America/New_York")
def test_the_marker_freezes_function_scoped_fixtures(evening):
    """A fixture the test asks for runs under the marker's clock, without asking for `clock`."""
    assert evening == dt.datetime(2024, 1, 15, 20, tzinfo=ET)
