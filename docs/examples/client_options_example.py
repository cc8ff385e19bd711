"""Options for every test's app client: the harness_app_client_options fixture."""

from __future__ import annotations

import pytest

from app import app


@pytest.fixture
def harness_app():
    return app


# --8<-- [start:options]
@pytest.fixture
def harness_app_client_options():
    # Requests go to https://acme.example.test/... with the tenant's header; a fixture of the
    # test's, such as a signed-in user, may give values too.
    return {"base_url": "https://acme.example.test", "headers": {"X-Tenant": "acme"}}


async def test_every_request_carries_the_options(app_client):
    assert (await app_client.get("/health")).json() == {"status": "ok"}
    assert str(app_client.base_url) == "https://acme.example.test"
    assert app_client.headers["X-Tenant"] == "acme"


@pytest.mark.app_client(headers={"X-Trace": "t1"})
async def test_a_marker_adds_headers(app_client):
    assert (app_client.headers["X-Tenant"], app_client.headers["X-Trace"]) == ("acme", "t1")


# --8<-- [end:options]
