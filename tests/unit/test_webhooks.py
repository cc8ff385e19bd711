"""harness.webhooks: the vendors' published vectors, their own verifiers, the frozen clock, the errors.

Known answers come from GitHub's and Slack's docs; Stripe and Standard Webhooks signatures are
checked by the vendors' Python libraries (stripe, standardwebhooks), which must accept a signed
webhook and refuse its tampered and stale copies.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Callable

import httpx
import pytest
import standardwebhooks
import stripe as stripe_sdk

from harness import freeze_time, webhooks
from harness.exceptions import WebhookError
from harness.webhooks import SignedWebhook

STRIPE_SECRET = "whsec_test_0123456789abcdef"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # "whsec_" + base64 of 24 bytes
EVENT = {
    "id": "evt_1",
    "object": "event",
    "type": "invoice.paid",
    "data": {"object": {"id": "in_1", "amount_paid": 1200, "customer_name": "Zoë"}},
}
FROZEN_AT = "2024-01-15 12:00:00"
FROZEN = 1705320000  # FROZEN_AT as epoch seconds, UTC

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# https://api.slack.com/authentication/verifying-requests-from-slack (also slackapi/python-slack-sdk's
# tests/slack_sdk/signature/test_signature_verifier.py)
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = 1531420618
SLACK_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

SIGNERS: dict[str, Callable[[], SignedWebhook]] = {
    "stripe": lambda: webhooks.stripe(EVENT, STRIPE_SECRET),
    "github": lambda: webhooks.github(EVENT, GITHUB_SECRET),
    "slack": lambda: webhooks.slack(SLACK_BODY, SLACK_SECRET),
    "standard": lambda: webhooks.standard(EVENT, STANDARD_SECRET),
    "generic": lambda: webhooks.generic(
        EVENT,
        "s3cret",
        header="X-Acme-Signature",
        signs="{timestamp}.{body}",
        timestamp_header="X-Acme-Timestamp",
    ),
}


def verify_stripe(signed: SignedWebhook) -> stripe_sdk.Event:
    return stripe_sdk.Webhook.construct_event(signed.body, signed.headers["Stripe-Signature"], STRIPE_SECRET)


# -- the vendors' published examples ----------------------------------------------------------------


def test_github_signature_matches_the_github_docs_example() -> None:
    """github() signs GitHub's documented payload into GitHub's documented X-Hub-Signature-256."""
    signed = webhooks.github("Hello, World!", GITHUB_SECRET)
    assert signed.body == b"Hello, World!"
    assert signed.headers["X-Hub-Signature-256"] == GITHUB_SIGNATURE


def test_slack_signature_matches_the_slack_docs_example() -> None:
    """slack() signs Slack's documented slash command into Slack's documented signature, sent as a form."""
    signed = webhooks.slack(SLACK_BODY, SLACK_SECRET, timestamp=SLACK_TIMESTAMP)
    assert signed.body == SLACK_BODY.encode()
    assert signed.timestamp == SLACK_TIMESTAMP
    assert signed.headers == {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": SLACK_SIGNATURE,
    }


def test_stripe_header_is_the_one_stripes_library_generates() -> None:
    """stripe() writes the Stripe-Signature header the stripe library's own test signer writes."""
    signed = webhooks.stripe(EVENT, STRIPE_SECRET, timestamp=FROZEN)
    expected = stripe_sdk.WebhookSignature.generate_signature_header(
        signed.body.decode(), STRIPE_SECRET, timestamp=FROZEN
    )
    assert signed.headers == {"Content-Type": "application/json", "Stripe-Signature": expected}
    assert expected.startswith("t=1705320000,v1=")


def test_standard_header_is_the_one_the_reference_library_signs() -> None:
    """standard() signs "<id>.<ts>.<body>" exactly as the standardwebhooks library does."""
    signed = webhooks.standard(EVENT, STANDARD_SECRET, msg_id="msg_1", timestamp=FROZEN)
    expected = standardwebhooks.Webhook(STANDARD_SECRET).sign(
        "msg_1", dt.datetime.fromtimestamp(FROZEN, dt.UTC), signed.body.decode()
    )
    assert signed.headers == {
        "Content-Type": "application/json",
        "webhook-id": "msg_1",
        "webhook-timestamp": "1705320000",
        "webhook-signature": expected,
    }


# -- accepted and refused by the vendors' verifiers ------------------------------------------------


def test_stripe_webhook_passes_stripes_verification() -> None:
    """stripe.Webhook.construct_event accepts a stripe() webhook and reads the event back."""
    event = verify_stripe(webhooks.stripe(EVENT, STRIPE_SECRET))
    assert (event.id, event.type) == ("evt_1", "invoice.paid")


def test_stripe_refuses_a_tampered_webhook() -> None:
    """The stripe library refuses the tampered() copy of a valid webhook."""
    signed = webhooks.stripe(EVENT, STRIPE_SECRET)
    with pytest.raises(stripe_sdk.SignatureVerificationError, match="No signatures found matching"):
        verify_stripe(signed.tampered())


def test_stripe_refuses_a_webhook_older_than_its_tolerance() -> None:
    """A stripe() webhook 10 minutes old is outside the stripe library's 300 s tolerance."""
    signed = webhooks.stripe(EVENT, STRIPE_SECRET, age=dt.timedelta(minutes=10))
    with pytest.raises(stripe_sdk.SignatureVerificationError, match="Timestamp outside the tolerance zone"):
        verify_stripe(signed)


def test_stripe_accepts_a_webhook_inside_its_tolerance() -> None:
    """A stripe() webhook 4 minutes old still passes the 300 s tolerance."""
    assert verify_stripe(webhooks.stripe(EVENT, STRIPE_SECRET, age=240)).id == "evt_1"


@pytest.mark.parametrize(
    "secret",
    [
        STANDARD_SECRET,
        STANDARD_SECRET.removeprefix("whsec_"),
        "whsec_" + base64.b64encode(b"a 19-byte signing k").decode().rstrip("="),
        b"a raw key of any length",
    ],
    ids=["whsec", "plain-base64", "whsec-unpadded-base64", "raw-bytes"],
)
def test_standard_webhook_passes_the_reference_verifier(secret: str | bytes) -> None:
    """standardwebhooks.Webhook.verify accepts standard() with the secret in each form both take."""
    signed = webhooks.standard(EVENT, secret)
    assert standardwebhooks.Webhook(secret).verify(signed.body, signed.headers) == EVENT


def test_standard_reference_verifier_refuses_a_tampered_webhook() -> None:
    """The standardwebhooks library refuses the tampered() copy of a valid webhook."""
    signed = webhooks.standard(EVENT, STANDARD_SECRET)
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="No matching signature found"):
        standardwebhooks.Webhook(STANDARD_SECRET).verify(signed.body, signed.tampered().headers)


def test_standard_reference_verifier_refuses_a_ten_minute_old_webhook() -> None:
    """A standard() webhook 10 minutes old is outside the reference verifier's 5 minute window."""
    signed = webhooks.standard(EVENT, STANDARD_SECRET, age=dt.timedelta(minutes=10))
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="Message timestamp too old"):
        standardwebhooks.Webhook(STANDARD_SECRET).verify(signed.body, signed.headers)


# -- bodies and headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "body"),
    [
        (b'{"raw": true}\n', b'{"raw": true}\n'),
        ('{"text": "Zoë"}', '{"text": "Zoë"}'.encode()),
        ({"b": 1, "a": [1, 2], "name": "Zoë"}, b'{"b":1,"a":[1,2],"name":"Zo\\u00eb"}'),
        ([{"id": 1}], b'[{"id":1}]'),
    ],
    ids=["bytes", "str", "dict", "list"],
)
def test_payload_is_encoded_once_into_the_signed_body(payload: webhooks.Payload, body: bytes) -> None:
    """Bytes go as given, a str as UTF-8, a dict or list as compact JSON in its own key order."""
    signed = webhooks.github(payload, GITHUB_SECRET)
    assert signed.body == body
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signed.headers["X-Hub-Signature-256"] == f"sha256={digest}"


def test_github_sends_the_event_and_a_fresh_uuid4_delivery() -> None:
    """github() names the event (ping by default) and a new uuid4 delivery id, and has no timestamp."""
    first, second = webhooks.github(EVENT, GITHUB_SECRET), webhooks.github(EVENT, GITHUB_SECRET)
    assert first.headers["X-GitHub-Event"] == "ping"
    assert first.headers["Content-Type"] == "application/json"
    assert uuid.UUID(first.headers["X-GitHub-Delivery"]).version == 4
    assert first.headers["X-GitHub-Delivery"] != second.headers["X-GitHub-Delivery"]
    assert first.timestamp == 0


def test_github_uses_the_event_and_delivery_given() -> None:
    """github(event=..., delivery=...) sends exactly those values."""
    signed = webhooks.github(EVENT, GITHUB_SECRET, event="push", delivery="d-1")
    assert (signed.headers["X-GitHub-Event"], signed.headers["X-GitHub-Delivery"]) == ("push", "d-1")


def test_slack_sends_a_dict_as_json() -> None:
    """slack() sends a dict payload (an Events API body) as JSON, signed as sent."""
    signed = webhooks.slack({"type": "url_verification", "challenge": "c"}, SLACK_SECRET, timestamp=FROZEN)
    assert signed.body == b'{"type":"url_verification","challenge":"c"}'
    assert signed.headers["Content-Type"] == "application/json"
    digest = hmac.new(SLACK_SECRET.encode(), b"v0:1705320000:" + signed.body, hashlib.sha256).hexdigest()
    assert signed.headers["X-Slack-Signature"] == f"v0={digest}"


def test_standard_message_id_defaults_to_msg_and_random_hex() -> None:
    """standard() invents a "msg_<hex>" id per webhook unless msg_id is given."""
    first, second = webhooks.standard(EVENT, STANDARD_SECRET), webhooks.standard(EVENT, STANDARD_SECRET)
    assert re.fullmatch(r"msg_[0-9a-f]{32}", first.headers["webhook-id"])
    assert first.headers["webhook-id"] != second.headers["webhook-id"]


# -- timestamps -------------------------------------------------------------------------------------


TIMESTAMP_HEADERS = {
    "stripe": ("Stripe-Signature", "t=1705320000,v1="),
    "slack": ("X-Slack-Request-Timestamp", "1705320000"),
    "standard": ("webhook-timestamp", "1705320000"),
    "generic": ("X-Acme-Timestamp", "1705320000"),
}


@pytest.mark.parametrize("backend", ["freezegun", "time-machine"])
@pytest.mark.parametrize("signer", sorted(TIMESTAMP_HEADERS))
def test_signers_take_the_time_from_the_frozen_clock(backend: str, signer: str) -> None:
    """Under freeze_time, the signed timestamp is the frozen time, on both clock backends."""
    with freeze_time(FROZEN_AT, backend=backend):  # type: ignore[arg-type]
        signed = SIGNERS[signer]()
    header, expected = TIMESTAMP_HEADERS[signer]
    assert signed.timestamp == FROZEN
    assert signed.headers[header].startswith(expected)


@pytest.mark.parametrize("backend", ["freezegun", "time-machine"])
def test_webhooks_signed_under_a_frozen_clock_verify_under_it(backend: str) -> None:
    """The vendors' verifiers read the same frozen clock, so a frozen test signs and verifies in 2024."""
    with freeze_time(FROZEN_AT, backend=backend):  # type: ignore[arg-type]
        assert verify_stripe(webhooks.stripe(EVENT, STRIPE_SECRET)).id == "evt_1"
        signed = webhooks.standard(EVENT, STANDARD_SECRET)
        assert standardwebhooks.Webhook(STANDARD_SECRET).verify(signed.body, signed.headers) == EVENT


@pytest.mark.parametrize(
    ("age", "expected"),
    [(90, FROZEN - 90), (dt.timedelta(minutes=1, seconds=30), FROZEN - 90), (0.5, FROZEN - 1)],
    ids=["int", "timedelta", "fraction-rounds-older"],
)
def test_age_is_subtracted_from_the_current_time(age: float | dt.timedelta, expected: int) -> None:
    """age= makes the webhook that much older than now, never younger."""
    with freeze_time(FROZEN_AT):
        assert webhooks.stripe(EVENT, STRIPE_SECRET, age=age).timestamp == expected


@pytest.mark.parametrize(
    "timestamp",
    [FROZEN, dt.datetime(2024, 1, 15, 13, tzinfo=dt.timezone(dt.timedelta(hours=1)))],
    ids=["epoch-seconds", "aware-datetime"],
)
def test_timestamp_takes_epoch_seconds_or_an_aware_datetime(timestamp: int | dt.datetime) -> None:
    """An explicit timestamp is used as given, and age= is subtracted from it too."""
    assert webhooks.slack(SLACK_BODY, SLACK_SECRET, timestamp=timestamp).timestamp == FROZEN
    assert webhooks.standard(EVENT, STANDARD_SECRET, timestamp=timestamp, age=60).timestamp == FROZEN - 60


# -- tampered() -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signer", sorted(SIGNERS))
def test_tampered_changes_one_character_of_the_signature_only(signer: str) -> None:
    """tampered() copies the webhook with one signature character changed, leaving the original alone."""
    signed = SIGNERS[signer]()
    original_headers = dict(signed.headers)
    bad = signed.tampered()
    assert (bad.body, bad.timestamp) == (signed.body, signed.timestamp)
    assert signed.headers == original_headers
    changed = [name for name in signed.headers if bad.headers[name] != signed.headers[name]]
    assert len(changed) == 1
    before, after = signed.headers[changed[0]], bad.headers[changed[0]]
    assert len(before) == len(after)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1


@pytest.mark.parametrize(
    ("signature", "tampered"),
    [("sha256=0bcd", "sha256=1bcd"), ("sha256=abcd", "sha256=0bcd")],
)
def test_tampered_swaps_the_first_signature_digit(signature: str, tampered: str) -> None:
    """The first digit after the scheme's prefix becomes "0", or "1" if it was "0"."""
    signed = SignedWebhook(b"{}", {"x-hub-signature-256": signature})
    assert signed.tampered().headers == {"x-hub-signature-256": tampered}


# -- the json= pitfall ------------------------------------------------------------------------------


def test_serialising_the_payload_again_breaks_the_signature() -> None:
    """json.dumps(payload) writes other bytes than were signed, so verification fails."""
    signed = webhooks.stripe(EVENT, STRIPE_SECRET)
    reencoded = json.dumps(EVENT).encode()  # ", " and ": " separators
    assert reencoded != signed.body
    assert json.loads(reencoded) == json.loads(signed.body)
    with pytest.raises(stripe_sdk.SignatureVerificationError, match="No signatures found matching"):
        verify_stripe(SignedWebhook(reencoded, signed.headers, signed.timestamp))


async def test_httpx_json_sends_other_bytes_than_were_signed() -> None:
    """Posted with content= the webhook verifies; posted with json= (ensure_ascii=False) it does not."""

    def app(request: httpx.Request) -> httpx.Response:
        digest = hmac.new(GITHUB_SECRET.encode(), request.content, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(f"sha256={digest}", request.headers["X-Hub-Signature-256"])
        return httpx.Response(204 if ok else 401)

    signed = webhooks.github(EVENT, GITHUB_SECRET)
    async with httpx.AsyncClient(transport=httpx.MockTransport(app), base_url="http://app.test") as client:
        right = await client.post("/hooks", content=signed.body, headers=signed.headers)
        wrong = await client.post("/hooks", json=EVENT, headers=signed.headers)
    assert right.status_code == 204
    assert wrong.status_code == 401
    assert wrong.request.content != signed.body  # "Zoë" raw in UTF-8, not "Zo\u00eb"


async def test_post_sends_the_signed_bytes_and_headers() -> None:
    """post() sends the exact body and signature, adds extra headers, and refuses a payload sent again."""
    seen: list[httpx.Request] = []

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        digest = hmac.new(GITHUB_SECRET.encode(), request.content, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(f"sha256={digest}", request.headers["X-Hub-Signature-256"])
        return httpx.Response(204 if ok else 401)

    signed = webhooks.github(EVENT, GITHUB_SECRET)
    async with httpx.AsyncClient(transport=httpx.MockTransport(app), base_url="http://app.test") as client:
        response = await signed.post(
            client,
            "/hooks",
            headers={"X-Trace": "t1", "content-type": "application/cloudevents+json"},
            params={"v": "2"},
        )
        assert response.status_code == 204
        with pytest.raises(WebhookError) as excinfo:
            signed.post(client, "/hooks", json=EVENT)
    assert seen[0].content == signed.body
    assert (seen[0].headers["X-Trace"], seen[0].url.params["v"]) == ("t1", "2")
    assert seen[0].headers.get_list("Content-Type") == [
        "application/cloudevents+json"
    ]  # replaced, not doubled
    assert excinfo.value.args == (
        "post() sends the signed bytes itself; drop json=. Sending the payload again (json=...) would send other "
        "bytes than were signed.",
    )


# -- generic() --------------------------------------------------------------------------------------


def test_generic_reproduces_the_github_and_slack_docs_examples() -> None:
    """generic() configured as GitHub's and Slack's schemes gives their documented signatures."""
    github = webhooks.generic("Hello, World!", GITHUB_SECRET, header="X-Hub-Signature-256", prefix="sha256=")
    assert github.headers["X-Hub-Signature-256"] == GITHUB_SIGNATURE
    slack = webhooks.generic(
        SLACK_BODY,
        SLACK_SECRET,
        header="X-Slack-Signature",
        signs="v0:{timestamp}:{body}",
        prefix="v0=",
        timestamp=SLACK_TIMESTAMP,
        timestamp_header="X-Slack-Request-Timestamp",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert slack.headers == {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": SLACK_SIGNATURE,
    }


def test_generic_base64_digest_of_another_hash() -> None:
    """encoding="base64" and algorithm="sha1" sign with those, as a Shopify- or Twilio-like scheme checks."""
    signed = webhooks.generic(EVENT, "s3cret", header="X-Sig", algorithm="sha1", encoding="base64")
    expected = base64.b64encode(hmac.new(b"s3cret", signed.body, hashlib.sha1).digest()).decode()
    assert signed.headers == {"Content-Type": "application/json", "X-Sig": expected}


def test_generic_tampered_changes_the_digest_after_the_prefix() -> None:
    """tampered() finds a generic() signature by its header and keeps the prefix."""
    signed = webhooks.generic(b"{}", "s3cret", header="X-Sig", prefix="v1,")
    bad = signed.tampered().headers["X-Sig"]
    assert bad.startswith("v1,")
    assert bad != signed.headers["X-Sig"]
    assert sum(a != b for a, b in zip(bad, signed.headers["X-Sig"], strict=True)) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"algorithm": "sha257"},
            "generic() does not know the hash 'sha257'; use one of hashlib's, such as 'sha256' or 'sha1'.",
        ),
        ({"encoding": "base32"}, "generic() encodes the digest as 'hex' or 'base64', got 'base32'."),
        (
            {"signs": "{timestamp}"},
            "generic(signs=...) must contain {body} where the body goes, got '{timestamp}'.",
        ),
    ],
)
def test_generic_refuses_a_scheme_it_cannot_sign(options: dict[str, str], message: str) -> None:
    """An unknown hash, encoding or a signed string without the body is refused naming it."""
    with pytest.raises(WebhookError) as excinfo:
        webhooks.generic(EVENT, "s3cret", header="X-Sig", **options)  # type: ignore[arg-type]
    assert excinfo.value.args == (message,)


# -- errors -----------------------------------------------------------------------------------------


def test_payload_of_another_type_is_refused() -> None:
    """A payload that is not bytes, str, dict or list is refused with what to pass instead."""
    with pytest.raises(WebhookError) as excinfo:
        webhooks.github((1, 2), GITHUB_SECRET)  # type: ignore[arg-type]
    assert excinfo.value.args == (
        "github() cannot sign a payload of type tuple. Pass bytes or a str (sent as is), "
        "or a dict or list (sent as compact JSON).",
    )


def test_payload_json_cannot_encode_is_refused() -> None:
    """A dict holding a value JSON cannot encode is refused with json's reason and the fix."""
    with pytest.raises(WebhookError) as excinfo:
        webhooks.stripe({"paid_at": dt.datetime(2024, 1, 15)}, STRIPE_SECRET)
    assert excinfo.value.args == (
        "stripe() cannot encode the payload as JSON: Object of type datetime is not JSON serializable. "
        "Convert such values first (a datetime with .isoformat(), a Decimal with str()), or pass the body "
        "as bytes.",
    )


@pytest.mark.parametrize(
    ("signer", "secret", "shown"),
    [
        ("slack", "", "str: ''"),
        ("stripe", b"", "bytes: b''"),
        ("github", None, "NoneType: None"),
        ("standard", "whsec_", "str: 'whsec_'"),
        ("standard", 42, "int: 42"),
    ],
)
def test_empty_or_missing_secret_is_refused(signer: str, secret: object, shown: str) -> None:
    """An empty secret, or one that is not str or bytes, is refused naming what was passed."""
    sign = getattr(webhooks, signer)
    with pytest.raises(WebhookError) as excinfo:
        sign(EVENT, secret)
    assert excinfo.value.args == (
        f"{signer}() needs the signing secret as a non-empty str or bytes, got {shown}. "
        "Pass the secret the app under test verifies with.",
    )


@pytest.mark.parametrize("tail", ["not base64!", "abcde", "ab=c"])
def test_whsec_secret_whose_tail_is_not_base64_is_refused(tail: str) -> None:
    """standard() refuses a "whsec_" secret whose tail does not decode, without echoing the secret."""
    with pytest.raises(WebhookError) as excinfo:
        webhooks.standard(EVENT, f"whsec_{tail}")
    assert excinfo.value.args == (
        "standard() reads the part after 'whsec_' as base64, and this one is not base64. Pass the "
        "secret as the provider shows it ('whsec_' and base64), plain base64, or the raw key as bytes.",
    )


def test_plain_secret_that_is_not_base64_is_refused() -> None:
    """standard() reads a str secret without "whsec_" as base64, and says so when it is not."""
    with pytest.raises(WebhookError) as excinfo:
        webhooks.standard(EVENT, "my-signing-secret")
    assert excinfo.value.args == (
        "standard() reads a secret without the 'whsec_' prefix as base64, and this one is not base64. "
        "Pass the secret as the provider shows it ('whsec_' and base64), plain base64, or the raw key "
        "as bytes.",
    )


@pytest.mark.parametrize(
    ("timestamp", "shown"),
    [
        (dt.datetime(2024, 1, 15, 12), "datetime: datetime.datetime(2024, 1, 15, 12, 0)"),
        ("1705320000", "str: '1705320000'"),
        (1705320000.5, "float: 1705320000.5"),
        (True, "bool: True"),
    ],
    ids=["naive-datetime", "str", "float", "bool"],
)
def test_timestamp_that_is_not_an_int_or_aware_datetime_is_refused(timestamp: object, shown: str) -> None:
    """A naive datetime or a non-integer timestamp is refused with how to fix it."""
    with pytest.raises(WebhookError) as excinfo:
        webhooks.stripe(EVENT, STRIPE_SECRET, timestamp=timestamp)  # type: ignore[arg-type]
    assert excinfo.value.args == (
        f"stripe() takes timestamp as epoch seconds (an int) or an aware datetime, got {shown}. "
        "Give a naive datetime its zone (tzinfo=datetime.UTC), or leave timestamp out to use the "
        "current (or frozen) time.",
    )


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (-1, "int: -1"),
        (dt.timedelta(seconds=-5), "timedelta: datetime.timedelta(days=-1, seconds=86395)"),
        (math.nan, "float: nan"),
        ("10m", "str: '10m'"),
    ],
    ids=["negative", "negative-timedelta", "nan", "str"],
)
def test_negative_or_non_numeric_age_is_refused(age: object, shown: str) -> None:
    """age= is how old the webhook is: a negative or non-numeric age is refused."""
    with pytest.raises(WebhookError) as excinfo:
        webhooks.slack(SLACK_BODY, SLACK_SECRET, age=age)  # type: ignore[arg-type]
    assert excinfo.value.args == (
        f"slack() takes age as seconds (int or float) or a timedelta of zero or more, got {shown}. "
        "It is how old the webhook is; for one from the future, pass a later timestamp= instead.",
    )


def test_tampered_needs_a_signature_header() -> None:
    """tampered() on a webhook built by hand without a signature header says what it looked at."""
    with pytest.raises(WebhookError) as excinfo:
        SignedWebhook(b"{}", {"Content-Type": "application/json"}).tampered()
    assert excinfo.value.args == (
        "This webhook has no signature header to tamper with; its headers are ['Content-Type']. "
        "Build it with webhooks.stripe(), github(), slack(), standard() or generic().",
    )
