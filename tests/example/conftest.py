"""A user's conftest.py: point harness at the models and the app, declare mocks and factories once."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from factories import CampaignFactory, ContactFactory, UserFactory
from fastapi import FastAPI
from mocks import OpenPhoneApi
from sqlalchemy.ext.asyncio import AsyncSession

import harness
from app.api import app
from app.models import Campaign, User
from harness import AlembicMigrations, AppClient, register_api, register_factory
from harness.db import SeedFunction


# --8<-- [start:schema]
@pytest.fixture(scope="session")
def harness_schema() -> AlembicMigrations:
    """The schema is the project's migrations (migrations/versions/), run to head once per run."""
    return AlembicMigrations(Path(__file__).parent / "alembic.ini")


# --8<-- [end:schema]


# --8<-- [start:seed]
async def reference_data(session: AsyncSession) -> dict[str, object]:
    """Committed once per run, with the schema: the operations account every environment has."""
    admin = User(email="ops@campaigns.test", api_token=secrets.token_hex(16))
    session.add(admin)
    return {"admin": admin}


@pytest.fixture(scope="session")
def harness_seed() -> SeedFunction:
    return reference_data


# --8<-- [end:seed]


@pytest.fixture
def harness_app() -> FastAPI:
    return app


@pytest.fixture
def client(app_client: AppClient) -> AppClient:
    """The seeds call it `client`."""
    return app_client


register_api(OpenPhoneApi)  # the open_phone_api fixture
register_factory(ContactFactory)  # contact_factory and contact
register_factory(UserFactory, "test_user")  # test_user_factory and test_user


@pytest.fixture
def auth_headers(test_user: User) -> dict[str, str]:
    return harness.auth_headers(test_user.api_token)


@pytest.fixture
async def campaign_with_contacts(db_session: AsyncSession) -> Campaign:
    return await CampaignFactory.create(name="Test Campaign", daily_limit=125, contacts=10)


def contacts_csv(rows: int, first: int = 0) -> bytes:
    lines = ["phone,name", *(f"+1444{n:07d},Contact {n}" for n in range(first, first + rows))]
    return "\n".join(lines).encode()


@pytest.fixture
def csv_file() -> bytes:
    return contacts_csv(100)


@pytest.fixture
def large_csv() -> bytes:
    return contacts_csv(5000)
