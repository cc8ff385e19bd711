# --8<-- [start:conftest]
import pytest

from app.db import Base
from app.main import app
from harness import register_api
from tests.mocks import SmsApi

register_api(SmsApi)  # the `sms_api` fixture


@pytest.fixture(scope="session")
def harness_schema():
    return Base.metadata  # the tables harness creates in its test database


@pytest.fixture
def harness_app():
    return app  # what `app_client` sends requests to


# --8<-- [end:conftest]
