"""The HTTP API: FastAPI with a get_db dependency, as in our users' services."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Campaign, Message
from app.service import SessionLocal

# The provider signs its webhooks the Standard Webhooks way (webhook-id/-timestamp/-signature).
WEBHOOK_SECRET = os.environ.get(
    "SMS_WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"example-webhook-secret").decode()
)
WEBHOOK_TOLERANCE_SECONDS = 300

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


def _signature_is_valid(body: bytes, headers: dict[str, str]) -> bool:
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > WEBHOOK_TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[1] for part in headers.get("webhook-signature", "").split() if "," in part]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


@app.post("/api/webhooks/sms")
async def receive_sms(request: Request, db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, str]:
    """Store an inbound message; refuse a bad signature or a stale timestamp."""
    body = await request.body()
    if not _signature_is_valid(body, dict(request.headers)):
        raise HTTPException(status_code=401, detail="invalid webhook signature")
    event = json.loads(body)
    data = event["data"]
    db.add(
        Message(
            external_id=data["messageId"], from_number=data["from"], to_number=data["to"], body=data["body"]
        )
    )
    await db.commit()
    return {"status": "stored"}
