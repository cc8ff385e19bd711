"""The service layer: it opens its own sessions from the app's sessionmaker and commits, as real code does."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.db import SessionLocal
from app.models import Campaign, CampaignSend, Contact

BUSINESS_ZONE = ZoneInfo("America/New_York")
OPENS, CLOSES = time(9), time(17)


def next_opening(now: datetime) -> datetime | None:
    """None during business hours (9 to 5, Monday to Friday, New York time), else when they next start."""
    local = now.astimezone(BUSINESS_ZONE)
    if local.weekday() < 5 and OPENS <= local.time() < CLOSES:
        return None
    day = local.date() if local.time() < OPENS else local.date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, OPENS, tzinfo=BUSINESS_ZONE)


async def execute_campaign(campaign_id: int) -> dict[str, int]:
    """Send to as many contacts as the daily limit allows and queue the rest, alternating A/B.

    Outside business hours nothing is sent: every message is queued for the next opening.
    """
    opening = next_opening(datetime.now(BUSINESS_ZONE))
    async with SessionLocal() as session:
        campaign = await session.get_one(Campaign, campaign_id)
        sent_today = await session.scalar(
            select(func.count())
            .select_from(CampaignSend)
            .where(CampaignSend.campaign_id == campaign_id, CampaignSend.status == "sent")
        )
        contacts = (
            await session.scalars(
                select(Contact).where(Contact.campaign_id == campaign_id).order_by(Contact.id)
            )
        ).all()
        budget = max(campaign.daily_limit - (sent_today or 0), 0) if opening is None else 0
        for n, contact in enumerate(contacts):
            status = "sent" if n < budget else "queued"
            session.add(
                CampaignSend(
                    campaign_id=campaign_id,
                    contact_id=contact.id,
                    variant="AB"[n % 2],
                    status=status,
                    scheduled_for=opening and opening.astimezone(UTC),  # SQLite keeps no offset: store UTC
                )
            )
        await session.commit()
        sent = min(budget, len(contacts))
        return {"sent": sent, "queued": len(contacts) - sent}


async def list_campaigns(session: AsyncSession) -> list[dict[str, object]]:
    """Campaigns with their contact counts, loaded in two queries whatever the number of campaigns."""
    campaigns = (
        await session.scalars(select(Campaign).options(selectinload(Campaign.contacts)).order_by(Campaign.id))
    ).all()
    return [
        {"id": c.id, "name": c.name, "contacts": len(c.contacts), "summary": c.summary} for c in campaigns
    ]
