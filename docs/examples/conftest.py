"""The conftest.py of the documentation's examples (shown on the quick start page)."""

from __future__ import annotations

# --8<-- [start:conftest]
import pytest

from app import Base, app
from harness import MockApi, endpoint, register_api


@pytest.fixture(scope="session")
def harness_schema():
    return Base.metadata  # or a callable, such as an Alembic upgrade


@pytest.fixture
def harness_app():
    return app


@register_api  # the `sms_api` fixture
class SmsApi(MockApi):
    base_url = "https://api.sms.example/v1"
    send_message = endpoint("POST", "/messages", status=202, json={"id": "msg_1"})


# --8<-- [end:conftest]
