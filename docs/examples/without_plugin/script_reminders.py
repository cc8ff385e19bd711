"""harness in a plain asyncio script: `python script_reminders.py`."""

from __future__ import annotations

# --8<-- [start:script]
import asyncio
import os

from mocks import SmsApi
from sqlalchemy import func, select

from app.db import Base, Campaign, Contact
from app.reminders import send_reminders
from harness import TestDatabase, block_network, freeze_time, rollback_scope


async def main():
    url = os.environ.get("HARNESS_DATABASE_URL")
    async with TestDatabase(url, schema=Base.metadata, name="script_example") as database:
        async with rollback_scope(database.engine) as session:
            campaign = Campaign(
                name="spring", contacts=[Contact(phone="+15550001"), Contact(phone="+15550002")]
            )
            session.add(campaign)
            await session.commit()
            with SmsApi() as sms_api, block_network(), freeze_time("2024-01-16 09:00 America/New_York"):
                sent = await send_reminders(session, campaign.id)
            sms_api.send_message.assert_called_times(2)
        async with database.engine.connect() as connection:  # after the scope: rolled back
            left = await connection.scalar(select(func.count()).select_from(Contact))
    print(f"sent {sent} reminders; {left} contacts left in the database")
    assert (sent, left) == (2, 0)


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:script]
