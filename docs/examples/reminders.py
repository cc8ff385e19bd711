"""Application code for the quick start: text a campaign's contacts during business hours."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import httpx
from app import SMS_API, Contact
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
