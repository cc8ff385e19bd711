"""A user's conftest.py: point harness at the models and the app, bind the app's sessions, declare mocks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from app import service
from app.api import app, get_db
from app.models import Base, Campaign
from factories import CampaignFactory, ContactFactory
from fastapi import FastAPI
from mocks import OpenPhoneApi
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from harness import AppClient, bind_sessions, register_api, register_factory


@pytest.fixture(scope="session")
def harness_schema() -> MetaData:
    return Base.metadata


@pytest.fixture
def app_bound(db_session: AsyncSession) -> Iterator[None]:
    """The service's sessionmaker and the API's get_db write into the test's rollback scope."""
    with bind_sessions(db_session, service.SessionLocal, app=app, dependencies=[get_db]):
        yield


@pytest.fixture
def harness_app() -> FastAPI:
    return app


@pytest.fixture
def harness_app_bind() -> list[Any]:
    """What app_client points at the test's rollback scope: the service's sessionmaker and get_db."""
    return [service.SessionLocal, get_db]


@pytest.fixture
def client(app_client: AppClient) -> AppClient:
    """The seeds call it `client`."""
    return app_client


register_api(OpenPhoneApi)  # the open_phone_api fixture


register_factory(ContactFactory)  # contact_factory and contact fixtures


@pytest.fixture
async def campaign_with_contacts(db_session: AsyncSession) -> Campaign:
    return await CampaignFactory.create(name="Test Campaign", daily_limit=125, contacts=10)
