"""The HTTP API: FastAPI with a get_db dependency, as in our users' services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Campaign
from app.service import SessionLocal

app = FastAPI()


async def get_db() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


class CampaignIn(BaseModel):
    name: str = Field(max_length=200)
    template_a: str = Field(max_length=320)
    template_b: str = Field(max_length=320)
    daily_limit: int = Field(default=125, gt=0)


@app.post("/api/campaigns", status_code=201)
async def create_campaign(
    body: CampaignIn, db: Annotated[AsyncSession, Depends(get_db)]
) -> dict[str, object]:
    campaign = Campaign(**body.model_dump())
    db.add(campaign)
    await db.commit()
    return {"id": campaign.id, **body.model_dump()}


@app.get("/api/campaigns/{campaign_id}")
async def get_campaign(campaign_id: int, db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, object]:
    campaign = await db.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(status_code=404, detail="campaign not found")
    return {"id": campaign.id, "name": campaign.name, "daily_limit": campaign.daily_limit}
