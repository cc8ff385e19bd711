"""harness in a unittest suite: `python unittest_reminders.py` (or `python -m unittest`)."""

from __future__ import annotations

# --8<-- [start:unittest]
import os
import unittest

from mocks import SmsApi
from sqlalchemy import func, select

from app.db import Base, Campaign, Contact
from app.reminders import send_reminders
from harness import TestDatabase, block_network, freeze_time, rollback_scope

database = TestDatabase(os.environ.get("HARNESS_DATABASE_URL"), schema=Base.metadata, name="unittest_example")


def setUpModule():
    database.create_sync()


def tearDownModule():
    database.drop_sync()


class SendRemindersTest(unittest.IsolatedAsyncioTestCase):  # an event loop per test
    async def asyncSetUp(self):
        self.session = await self.enterAsyncContext(rollback_scope(database.engine))
        self.sms_api = self.enterContext(SmsApi())
        self.enterContext(block_network())

    async def test_reminders_wait_for_business_hours(self):
        campaign = Campaign(name="spring", contacts=[Contact(phone="+15550001"), Contact(phone="+15550002")])
        self.session.add(campaign)
        await self.session.commit()
        with freeze_time("2024-01-15 20:00 America/New_York") as clock:
            self.assertEqual(await send_reminders(self.session, campaign.id), 0)
            clock.move_to("2024-01-16 09:00 America/New_York")
            self.assertEqual(await send_reminders(self.session, campaign.id), 2)
        self.sms_api.send_message.assert_called_times(2)

    async def test_each_test_starts_from_an_empty_database(self):
        self.assertEqual(await self.session.scalar(select(func.count()).select_from(Contact)), 0)


if __name__ == "__main__":
    unittest.main()
# --8<-- [end:unittest]
