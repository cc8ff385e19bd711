"""The application the documentation's examples test: campaigns and contacts, a FastAPI app, an SMS call."""

from __future__ import annotations

import csv
import io
import os
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request, UploadFile
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, insert, select
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

SMS_API = "https://api.sms.example/v1"


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    daily_limit: Mapped[int] = mapped_column(default=125)
    contacts: Mapped[list[Contact]] = relationship(back_populates="campaign", cascade="all, delete-orphan")


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    campaign: Mapped[Campaign] = relationship(back_populates="contacts")


# The app's database, from its settings. Tests never reach it: harness adopts `engine`.
engine = create_async_engine(os.environ.get("APP_DATABASE_URL", "sqlite+aiosqlite:///./app.db"))
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> Any:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def get_db() -> Any:
    async with SessionLocal() as session:
        yield session
        await session.commit()  # one unit of work per request


class CampaignIn(BaseModel):
    name: str
    daily_limit: int = 125


@app.post("/api/campaigns", status_code=201)
async def create_campaign(body: CampaignIn, db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, Any]:
    campaign = Campaign(**body.model_dump())
    db.add(campaign)
    await db.flush()  # get_db commits
    return {"id": campaign.id, "name": campaign.name}


async def send_sms(to: str, text: str) -> dict[str, Any]:
    """Send one message through the provider."""
    async with httpx.AsyncClient(base_url=SMS_API) as http:
        response = await http.post("/messages", json={"to": to, "text": text})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def list_campaigns(session: AsyncSession, limit: int | None = None) -> list[dict[str, Any]]:
    """Campaigns with their number of contacts: two queries, however many campaigns there are."""
    campaigns = await session.scalars(
        select(Campaign).options(selectinload(Campaign.contacts)).order_by(Campaign.id).limit(limit)
    )
    return [{"id": c.id, "name": c.name, "contacts": len(c.contacts)} for c in campaigns]


@app.get("/api/campaigns")
async def get_campaigns(
    db: Annotated[AsyncSession, Depends(get_db)], limit: int | None = None
) -> list[dict[str, Any]]:
    return await list_campaigns(db, limit)


@app.post("/api/import/csv")
async def import_contacts(file: UploadFile, db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, int]:
    """Import contacts from a CSV with `phone,campaign_id` columns, in one executemany INSERT."""
    rows = list(csv.DictReader(io.StringIO((await file.read()).decode())))
    await db.execute(
        insert(Contact), [{"phone": r["phone"], "campaign_id": int(r["campaign_id"])} for r in rows]
    )
    await db.commit()
    return {"imported": len(rows)}


STRIPE_WEBHOOK_SECRET = "whsec_test_secret"


@app.post("/webhooks/stripe")
async def stripe_webhook(request: Request) -> dict[str, str]:
    """Accept a Stripe event only when Stripe's own library verifies its signature."""
    import stripe  # here, not at the top: it takes half a second to import

    try:
        stripe.Webhook.construct_event(
            await request.body(), request.headers.get("Stripe-Signature", ""), STRIPE_WEBHOOK_SECRET
        )
    except (ValueError, stripe.SignatureVerificationError) as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    return {"status": "verified"}


ACME_WEBHOOK_SECRET = "acme-signing-secret"


@app.post("/webhooks/acme")
async def acme_webhook(request: Request) -> dict[str, str]:
    """A provider's own scheme, verified by hand: HMAC-SHA256 of "<timestamp>.<body>", hex, "sha256=" in front."""
    import hashlib
    import hmac

    timestamp = request.headers.get("X-Acme-Timestamp", "")
    signed = f"{timestamp}.".encode() + await request.body()
    expected = "sha256=" + hmac.new(ACME_WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Acme-Signature", "")):
        raise HTTPException(status_code=401, detail="bad signature")
    return {"status": "verified"}
