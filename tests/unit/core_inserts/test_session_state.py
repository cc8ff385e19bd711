"""Core inserts against the ORM flush: session state cases (see conftest.py)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from harness import FactoryError
from tests.factories import CampaignFactory, ContactFactory
from tests.models import Contact, Owner


async def test_pending_unrelated(db_session: AsyncSession, path: str) -> None:
    owner = Owner(name="pending")
    db_session.add(owner)
    await ContactFactory.create()
    assert owner.id is not None


async def test_dirty_flushed(db_session: AsyncSession, path: str) -> None:
    c = await CampaignFactory.create(name="a")
    c.name = "b"
    await ContactFactory.create()
    conn = await db_session.connection()
    names = sorted((await conn.execute(text("select name from campaigns"))).scalars().all())
    assert "b" in names


async def test_error_then_rollback(db_session: AsyncSession, path: str) -> None:
    await CampaignFactory.create(name="dup")
    with pytest.raises(FactoryError):
        await ContactFactory.create_batch(2, campaign__name="dup2")  # two campaigns, same name
    await db_session.rollback()
    await ContactFactory.create_batch(2)
    assert await db_session.scalar(select(func.count()).select_from(Contact)) == 2


async def test_gather(db_session: AsyncSession, path: str) -> None:
    a, b = await asyncio.gather(ContactFactory.create_batch(3), ContactFactory.create_batch(3))
    assert len({c.id for c in a + b}) == 6
