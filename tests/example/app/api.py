"""The HTTP API: FastAPI with a lifespan and a get_db dependency, as in our users' services."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import SessionLocal, engine
from app.models import Base, Campaign, Contact, Message, User
from app.service import list_campaigns

# The provider signs its webhooks the Standard Webhooks way (webhook-id/-timestamp/-signature).
WEBHOOK_SECRET = os.environ.get(
    "SMS_WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"example-webhook-secret").decode()
)
WEBHOOK_TOLERANCE_SECONDS = 300


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as connection:  # a development convenience, as the tutorials show
        await connection.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def get_db() -> AsyncIterator[AsyncSession]:
    """One unit of work per request: the endpoints flush, the commit comes after the response."""
    async with SessionLocal() as session:
        yield session
        await session.commit()


Db = Annotated[AsyncSession, Depends(get_db)]


async def current_user(db: Db, authorization: Annotated[str, Header()] = "") -> User:
    scheme, _, token = authorization.partition(" ")
    user = await db.scalar(select(User).where(User.api_token == token)) if scheme == "Bearer" else None
    if user is None:
        raise HTTPException(status_code=401, detail="missing or unknown API token")
    return user


Authenticated = Depends(current_user)


class CampaignIn(BaseModel):
    name: str = Field(max_length=200)
    template_a: str = Field(max_length=320)
    template_b: str = Field(max_length=320)
    daily_limit: int = Field(default=125, gt=0)
    summary: str | None = Field(default=None, max_length=200)


def _campaign_out(campaign: Campaign) -> dict[str, object]:
    fields = ("id", "name", "template_a", "template_b", "daily_limit", "summary")
    return {field: getattr(campaign, field) for field in fields}


@app.post("/api/campaigns", status_code=201, dependencies=[Authenticated])
async def create_campaign(body: CampaignIn, db: Db) -> dict[str, object]:
    campaign = Campaign(**body.model_dump())
    db.add(campaign)
    await db.flush()  # get_db commits
    return _campaign_out(campaign)


@app.get("/api/campaigns", dependencies=[Authenticated])
async def get_campaigns(db: Db) -> list[dict[str, object]]:
    return await list_campaigns(db)


@app.get("/api/campaigns/{campaign_id}", dependencies=[Authenticated])
async def get_campaign(campaign_id: int, db: Db) -> dict[str, object]:
    campaign = await db.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(status_code=404, detail="campaign not found")
    return _campaign_out(campaign)


@app.post("/api/campaigns/{campaign_id}/upload", dependencies=[Authenticated])
async def upload_contacts(campaign_id: int, file: UploadFile, db: Db) -> dict[str, int]:
    """Import contacts from a CSV with `phone,name` columns, in one multi-row INSERT."""
    if await db.get(Campaign, campaign_id) is None:
        raise HTTPException(status_code=404, detail="campaign not found")
    rows = list(csv.DictReader(io.StringIO((await file.read()).decode())))
    if not rows or {"phone", "name"} - set(rows[0]):
        raise HTTPException(status_code=422, detail="the CSV needs a header row with phone and name")
    await db.execute(
        insert(Contact), [{"phone": r["phone"], "name": r["name"], "campaign_id": campaign_id} for r in rows]
    )
    await db.commit()
    return {"imported": len(rows)}


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
async def receive_sms(request: Request, db: Db) -> dict[str, str]:
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
