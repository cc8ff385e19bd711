# --8<-- [start:main]
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Campaign, get_db
from app.reminders import send_reminders

app = FastAPI()
Db = Annotated[AsyncSession, Depends(get_db)]


class CampaignIn(BaseModel):
    name: str


@app.post("/campaigns", status_code=201)
async def create_campaign(body: CampaignIn, db: Db) -> dict:
    campaign = Campaign(name=body.name)
    db.add(campaign)
    await db.flush()  # get_db commits after the response is ready
    return {"id": campaign.id, "name": campaign.name}


@app.post("/campaigns/{campaign_id}/reminders")
async def remind(campaign_id: int, db: Db) -> dict:
    return {"sent": await send_reminders(db, campaign_id)}


# --8<-- [end:main]
