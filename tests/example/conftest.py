"""A user's conftest.py: point harness at the models and bind the app's sessions to each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from app import service
from app.api import app, get_db
from app.models import Base, Campaign, Contact
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from harness import bind_sessions


@pytest.fixture(scope="session")
def harness_schema() -> MetaData:
    return Base.metadata


@pytest.fixture
def app_bound(db_session: AsyncSession) -> Iterator[None]:
    """The service's sessionmaker and the API's get_db write into the test's rollback scope."""
    with bind_sessions(db_session, service.SessionLocal, app=app, dependencies=[get_db]):
        yield


@pytest.fixture
async def client(app_bound: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
async def campaign_with_contacts(db_session: AsyncSession) -> Campaign:
    campaign = Campaign(
        name="Test Campaign", template_a="Template A", template_b="Template B", daily_limit=125
    )
    campaign.contacts = [Contact(phone=f"+1555000{i:04d}", name=f"Contact {i}") for i in range(10)]
    db_session.add(campaign)
    await db_session.commit()  # a savepoint release: still rolled back after the test
    return campaign
