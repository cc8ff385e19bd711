"""Models shared by harness's own tests: a campaign with contacts, as in the users' suites."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Numeric, String, func
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    daily_limit: Mapped[int] = mapped_column(default=125)
    contacts: Mapped[list[Contact]] = relationship(back_populates="campaign", cascade="all, delete-orphan")


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    campaign: Mapped[Campaign | None] = relationship(back_populates="contacts")


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Account(Base):
    """Every column required and undeclared in its factory: harness derives them all."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(40), unique=True)
    plan: Mapped[Plan] = mapped_column(Enum(Plan))
    balance: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    active: Mapped[bool]
    born: Mapped[date]
    joined: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    token: Mapped[uuid.UUID] = mapped_column(unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))
    owner: Mapped[Owner] = relationship()


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Pet(Base):
    """A required foreign key to a model that has no factory in the tests."""

    __tablename__ = "pets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    keeper_id: Mapped[int] = mapped_column(ForeignKey("keepers.id"))
    keeper: Mapped[Keeper] = relationship()


class Keeper(Base):
    __tablename__ = "keepers"

    id: Mapped[int] = mapped_column(primary_key=True)


class Message(Base):
    """Single-table inheritance with a NOT NULL discriminator that the ORM fills."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    body: Mapped[str] = mapped_column(String(160))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "message"}  # noqa: RUF012


class Sms(Message):
    __mapper_args__ = {"polymorphic_identity": "sms"}  # noqa: RUF012
