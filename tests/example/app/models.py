from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    template_a: Mapped[str] = mapped_column(String(320))
    template_b: Mapped[str] = mapped_column(String(320))
    daily_limit: Mapped[int] = mapped_column(default=125)
    # Added in a later release: rows written before it have NULL here.
    summary: Mapped[str | None] = mapped_column(String(200), default=None)
    contacts: Mapped[list[Contact]] = relationship(back_populates="campaign", cascade="all, delete-orphan")
    sends: Mapped[list[CampaignSend]] = relationship(back_populates="campaign", cascade="all, delete-orphan")


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    campaign: Mapped[Campaign] = relationship(back_populates="contacts")


class CampaignSend(Base):
    __tablename__ = "campaign_sends"
    __table_args__ = (UniqueConstraint("campaign_id", "contact_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(1))
    status: Mapped[str] = mapped_column(String(10))  # "sent" or "queued"
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(default=datetime.now)
    campaign: Mapped[Campaign] = relationship(back_populates="sends")


class User(Base):
    """An API user: requests carry its token as `Authorization: Bearer <token>`."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    api_token: Mapped[str] = mapped_column(String(64), unique=True)


class Message(Base):
    """An inbound SMS, stored from the SMS provider's webhook."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    from_number: Mapped[str] = mapped_column(String(20))
    to_number: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(String(1600))
