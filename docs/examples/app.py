"""The application the documentation's examples test: campaigns and contacts, a FastAPI app, an SMS call."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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


SessionLocal = async_sessionmaker(expire_on_commit=False)  # bound to the real engine at start-up
app = FastAPI()


async def get_db() -> Any:
    async with SessionLocal() as session:
        yield session


class CampaignIn(BaseModel):
    name: str
    daily_limit: int = 125


@app.post("/api/campaigns", status_code=201)
async def create_campaign(body: CampaignIn, db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, Any]:
    campaign = Campaign(**body.model_dump())
    db.add(campaign)
    await db.commit()
    return {"id": campaign.id, "name": campaign.name}


async def send_sms(to: str, text: str) -> dict[str, Any]:
    """Send one message through the provider."""
    async with httpx.AsyncClient(base_url=SMS_API) as http:
        response = await http.post("/messages", json={"to": to, "text": text})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
