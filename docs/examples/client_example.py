"""The app client: an httpx client for the app under test, its sessions bound to the test's transaction."""

from __future__ import annotations

# --8<-- [start:app_client]
from app import Campaign, SessionLocal, app, get_db

from harness import app_client, auth_headers


async def test_create_campaign(db_session):
    """What the API commits is visible to the test (and rolled back after it)."""
    async with app_client(app, session=db_session, bind=[get_db, SessionLocal]) as client:
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


@pytest.fixture
def harness_app_bind():
    return [SessionLocal, get_db]  # bound to db_session


async def test_full_flow(app_client, db_session):
    """The `app_client` fixture posts to the app; the row is in the test's session."""
    response = await app_client.post("/api/campaigns", json={"name": "January", "daily_limit": 50})
    assert (await db_session.get(Campaign, response.json()["id"])).daily_limit == 50


# --8<-- [end:plugin]


async def test_the_app_is_restored_on_exit(db_session):
    """The client's dependency overrides last as long as the client."""
    async with app_client(app, session=db_session, bind=[get_db]):
        assert get_db in app.dependency_overrides
    assert get_db not in app.dependency_overrides
