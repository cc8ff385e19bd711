"""The app client: an httpx client for the app under test, on the test's database."""

from __future__ import annotations

# --8<-- [start:app_client]
from app import Campaign, app, engine
from harness import app_client, auth_headers


async def test_create_campaign(db_session):
    """What the API commits is visible to the test (and rolled back after it)."""
    async with app_client(app, session=db_session, bind=[engine]) as client:  # adopts `engine`
        response = await client.post(
            "/api/campaigns", json={"name": "January"}, headers=auth_headers("token")
        )
    assert response.status_code == 201
    assert await db_session.get(Campaign, response.json()["id"]) is not None


# --8<-- [end:app_client]


# --8<-- [start:plugin]
import pytest


@pytest.fixture
def harness_app():
    return app  # or create_app()


async def test_full_flow(app_client, db_session):
    """The `app_client` fixture posts to the app; its get_db commits into the test's transaction."""
    response = await app_client.post("/api/campaigns", json={"name": "January", "daily_limit": 50})
    assert (await db_session.get(Campaign, response.json()["id"])).daily_limit == 50


# --8<-- [end:plugin]


# --8<-- [start:lifespan]
@pytest.mark.app_client(lifespan=False, headers={"X-Tenant": "acme"})
async def test_without_the_lifespan(app_client):
    """The marker takes app_client()'s options: here, no start-up and a default header."""
    assert (await app_client.get("/health")).json() == {"status": "ok"}
    assert app_client.headers["X-Tenant"] == "acme"


# --8<-- [end:lifespan]


async def test_the_app_is_restored_on_exit(db_session):
    """Dependency overrides set while the client is open last as long as the client."""
    async with app_client(app, session=db_session):
        app.dependency_overrides[list] = dict
    assert app.dependency_overrides == {}


# --8<-- [start:several_apps]
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import get_db

admin_app = FastAPI()  # a second app of the project, on the same database


@admin_app.get("/campaigns/count")
async def count_campaigns(db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, int]:
    return {"count": await db.scalar(select(func.count()).select_from(Campaign))}


@pytest.fixture
async def admin_client(db_session):
    """Its own client, in the same test's transaction: each app's lifespan runs in its client."""
    async with app_client(admin_app, session=db_session) as client:
        yield client


async def test_what_one_app_writes_the_other_reads(app_client, admin_client):
    await app_client.post("/api/campaigns", json={"name": "January"})  # get_db commits
    assert (await admin_client.get("/campaigns/count")).json() == {"count": 1}


# --8<-- [end:several_apps]
