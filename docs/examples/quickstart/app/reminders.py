# --8<-- [start:reminders]
import datetime as dt
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Contact

SMS_API = "https://api.sms.example/v1"
NEW_YORK = ZoneInfo("America/New_York")


async def send_reminders(session: AsyncSession, campaign_id: int) -> int:
    """Text every contact of the campaign, from 9 to 5 New York time; return how many were sent."""
    if not 9 <= dt.datetime.now(NEW_YORK).hour < 17:
        return 0
    phones = (await session.scalars(select(Contact.phone).where(Contact.campaign_id == campaign_id))).all()
    async with httpx.AsyncClient(base_url=SMS_API) as http:
        for phone in phones:
            (await http.post("/messages", json={"to": phone})).raise_for_status()
    return len(phones)


# --8<-- [end:reminders]
