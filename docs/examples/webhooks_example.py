"""Webhook signers: signed bodies the app's real verification accepts, and what it must refuse."""

from __future__ import annotations

# --8<-- [start:signers]
import httpx

from app import app
from harness import webhooks

STRIPE_SECRET = "whsec_test_secret"  # the secret the app under test is configured with
EVENT = {"id": "evt_1", "object": "event", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}


async def test_paid_invoice_is_accepted(app_client):
    """post() sends the signed bytes and headers unchanged, and the app verifies them."""
    signed = webhooks.stripe(EVENT, STRIPE_SECRET)
    response = await signed.post(app_client, "/webhooks/stripe")
    assert response.status_code == 200


async def test_forged_webhook_is_refused():
    """A tampered signature is refused; any httpx client can send it, by hand too."""
    forged = webhooks.stripe(EVENT, STRIPE_SECRET).tampered()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app.test") as client:
        response = await client.post("/webhooks/stripe", content=forged.body, headers=forged.headers)
    assert response.status_code == 400


# --8<-- [end:signers]


# --8<-- [start:generic]
ACME_SECRET = "acme-signing-secret"


async def test_a_providers_own_scheme(app_client):
    """generic() signs any HMAC scheme: here "<timestamp>.<body>", hex, behind "sha256=", time in a header."""
    signed = webhooks.generic(
        EVENT,
        ACME_SECRET,
        header="X-Acme-Signature",
        signs="{timestamp}.{body}",
        prefix="sha256=",
        timestamp_header="X-Acme-Timestamp",
    )
    assert (await signed.post(app_client, "/webhooks/acme")).status_code == 200
    assert (await signed.tampered().post(app_client, "/webhooks/acme")).status_code == 401


# --8<-- [end:generic]


# --8<-- [start:frozen_clock]
from harness import freeze_time


def test_signed_at_the_frozen_time():
    """The signed timestamp is the frozen time."""
    with freeze_time("2024-01-15 12:00:00"):
        signed = webhooks.standard(EVENT, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert signed.timestamp == 1705320000
    assert signed.headers["webhook-timestamp"] == "1705320000"


# --8<-- [end:frozen_clock]


# --8<-- [start:json_pitfall]
import json


async def test_json_sends_other_bytes_than_were_signed(app_client):
    """content=signed.body verifies; json=payload sends other bytes and is refused."""
    payload = {"customer": "Zoë", "amount": 1200}
    signed = webhooks.stripe(payload, STRIPE_SECRET)

    assert signed.body == b'{"customer":"Zo\\u00eb","amount":1200}'  # signed and sent by content=
    assert json.dumps(payload) == '{"customer": "Zo\\u00eb", "amount": 1200}'  # json.dumps, requests, aiohttp

    verified = await app_client.post("/webhooks/stripe", content=signed.body, headers=signed.headers)
    mismatch = await app_client.post("/webhooks/stripe", json=payload, headers=signed.headers)
    assert mismatch.request.content == b'{"customer":"Zo\xc3\xab","amount":1200}'  # what httpx's json= sends
    assert verified.status_code == 200
    assert mismatch.status_code == 400  # signature mismatch


# --8<-- [end:json_pitfall]


import datetime as dt

import pytest
from standardwebhooks import Webhook

from app import ACME_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET

STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_examples_secrets_are_the_apps():
    """The secrets above are the ones the example app verifies with."""
    assert (STRIPE_SECRET, ACME_SECRET) == (STRIPE_WEBHOOK_SECRET, ACME_WEBHOOK_SECRET)


def test_standard_webhooks_verifies_at_the_frozen_time():
    """The Standard Webhooks library, reading the same frozen clock, accepts the signature."""
    with freeze_time("2024-01-15 12:00:00"):
        signed = webhooks.standard(EVENT, STANDARD_SECRET)
        assert Webhook(STANDARD_SECRET).verify(signed.body, signed.headers) == EVENT


@pytest.mark.parametrize(
    "build",
    [
        lambda: webhooks.stripe(EVENT, STRIPE_SECRET).tampered(),
        lambda: webhooks.stripe(EVENT, STRIPE_SECRET, age=dt.timedelta(minutes=10)),
        lambda: webhooks.stripe(EVENT, "whsec_not_the_app_secret"),
    ],
    ids=["tampered", "stale", "other-secret"],
)
async def test_the_negative_cases_are_refused(app_client, build):
    """Each negative case of the page's table is refused by Stripe's own verification."""
    signed = build()
    response = await app_client.post("/webhooks/stripe", content=signed.body, headers=signed.headers)
    assert response.status_code == 400


async def test_a_changed_body_or_a_missing_signature_is_refused(app_client):
    """A body changed after signing, or a request without the signature header, is refused."""
    signed = webhooks.stripe(EVENT, STRIPE_SECRET)
    changed = await app_client.post("/webhooks/stripe", content=signed.body + b" ", headers=signed.headers)
    unsigned = {k: v for k, v in signed.headers.items() if k != "Stripe-Signature"}
    missing = await app_client.post("/webhooks/stripe", content=signed.body, headers=unsigned)
    assert (changed.status_code, missing.status_code) == (400, 400)
