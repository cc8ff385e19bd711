"""A user's conftest.py: point harness at the models and bind the app's sessions to each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from app import service
from app.api import app, get_db
from app.models import Base, Campaign
from factories import CampaignFactory, ContactFactory
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from harness import bind_sessions, register_factory


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


register_factory(ContactFactory)  # contact_factory and contact fixtures


@pytest.fixture
async def campaign_with_contacts(db_session: AsyncSession) -> Campaign:
    return await CampaignFactory.create(name="Test Campaign", daily_limit=125, contacts=10)
