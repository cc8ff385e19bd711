"""Migrating from a hand-written conftest.py: the fixtures it had, and what replaces them."""

from __future__ import annotations

import pytest_asyncio
from httpx import ASGITransport, AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app import Base, Campaign, SessionLocal, app, get_db
from harness import create_test_engine


# --8<-- [start:before]
@pytest_asyncio.fixture
async def db():
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        yield session
        await session.rollback()
    await engine.dispose()


@pytest_asyncio.fixture
async def client(db):
    app.dependency_overrides[get_db] = lambda: db
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client
    app.dependency_overrides.clear()


# --8<-- [end:before]


async def test_the_hand_written_fixtures_leak_a_commit(db: AsyncSession) -> None:
    """Why migrate: with the fixtures above, a commit survives the final rollback."""
    db.add(Campaign(name="committed"))
    await db.commit()
    await db.rollback()  # what the fixture does at the end
    assert await db.scalar(select(func.count()).select_from(Campaign)) == 1


# --8<-- [start:after]
async def test_create_campaign(app_client, db_session):
    response = await app_client.post("/api/campaigns", json={"name": "January"})
    assert await db_session.get(Campaign, response.json()["id"]) is not None


# --8<-- [end:after]


async def test_harness_takes_the_commit_back(db_session: AsyncSession) -> None:
    """After test_create_campaign, whose app committed, the table is empty again."""
    assert await db_session.scalar(select(func.count()).select_from(Campaign)) == 0


async def test_own_engines_are_test_engines() -> None:
    """A test that needs its own engine makes it with create_test_engine, which vets the URL."""
    engine = create_test_engine("sqlite+aiosqlite://")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with SessionLocal(bind=engine) as session:
            assert await session.scalar(select(func.count()).select_from(Campaign)) == 0
    finally:
        await engine.dispose()
