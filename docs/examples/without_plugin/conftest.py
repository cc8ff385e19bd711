"""A conftest.py that wires harness by hand, with its pytest plugin off (`-p no:harness`)."""

from __future__ import annotations

# --8<-- [start:conftest]
import os

import pytest
from mocks import SmsApi

from app.db import Base
from harness import TestDatabase, block_network, rollback_scope


@pytest.fixture(scope="session")
def database():
    # Built on a private event loop (a sync fixture), so it serves any loop the tests run in;
    # a SQLite file by default, a test_… database on the server HARNESS_DATABASE_URL names.
    url = os.environ.get("HARNESS_DATABASE_URL")
    with TestDatabase(url, schema=Base.metadata, name="by_hand") as database:
        yield database  # dropped after the run


@pytest.fixture
async def session(database):
    async with rollback_scope(database.engine) as session:  # everything it writes is rolled back
        yield session


@pytest.fixture
def sms_api():
    with SmsApi() as api:  # fails the test on a request no route answers
        yield api


@pytest.fixture(autouse=True)
def no_network():
    with block_network():  # nothing leaves the machine by accident
        yield


# --8<-- [end:conftest]
