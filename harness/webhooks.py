"""Sign webhooks the way Stripe, GitHub, Slack and Standard Webhooks senders do, or any HMAC scheme.

    signed = webhooks.stripe({"type": "invoice.paid", "data": {"object": invoice}}, "whsec_test")
    response = await signed.post(client, "/webhooks/stripe")   # the exact signed bytes and headers
    assert response.status_code == 200

    response = await client.post("/webhooks/stripe", content=signed.body, headers=signed.tampered().headers)
    assert response.status_code == 400

Each signer encodes the payload once (bytes as they are, a str as UTF-8, a dict or list as compact
JSON) and signs those bytes; post `signed.body` with `content=`, never the payload with `json=`,
or the app receives other bytes than were signed. Timestamps default to `time.time()`, so under
`harness.freeze_time` they are the frozen clock's; `age=` makes a webhook that many seconds old.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from typing import Any, NoReturn

import httpx

from harness.exceptions import WebhookError

__all__ = ["SignedWebhook", "generic", "github", "slack", "standard", "stripe"]

Payload = bytes | str | dict[str, Any] | list[Any]
Secret = str | bytes

# The header that carries each scheme's signature, and what precedes the signature in it.
_SIGNATURES = {
    "stripe-signature": "v1=",
    "x-hub-signature-256": "sha256=",
    "x-slack-signature": "v0=",
    "webhook-signature": "v1,",
}
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"


@dataclasses.dataclass(frozen=True)
class SignedWebhook:
    """The exact body bytes of a webhook and the headers that sign them.

    Post the body with `content=`: the signature covers these bytes and no others. `json=` would
    serialise the payload again, with its own separators and escaping, and the app under test
    would rightly reject what it receives. `timestamp` is the signed time in epoch seconds (0 for
    GitHub, whose scheme has none); `tampered()` gives a copy whose signature is wrong.

    `post(client, url)` sends it that way, so nothing else can be sent by mistake.
    `signature_header` and `signature_prefix` tell `tampered()` where the signature of a
    `generic()` scheme is (the other signers' headers it knows).

    Usage:

    ```python
    signed = webhooks.github({"zen": "Design for failure."}, "s3cret", event="ping")
    response = await signed.post(client, "/hooks/github")
    ```
    """

    body: bytes
    headers: dict[str, str]
    timestamp: int = 0
    signature_header: str | None = None
    signature_prefix: str = ""

    def post(self, client: Any, url: str, **request: Any) -> Any:
        """POST the exact signed body and its headers with `client` (an httpx client or `app_client`).

        Returns what `client.post` returns: await it for an async client. Extra `headers=` are
        added to the signed ones; other keywords go to `client.post`.

        Usage:

        ```python
        response = await webhooks.stripe(event, secret).post(app_client, "/webhooks/stripe")
        ```
        """
        if {"json", "data", "content"} & request.keys():
            msg = (
                f"post() sends the signed bytes itself; drop {sorted({'json', 'data', 'content'} & request.keys())[0]}=. "
                "Sending the payload again (json=...) would send other bytes than were signed."
            )
            raise WebhookError(msg)
        headers = httpx.Headers(self.headers)
        headers.update(request.pop("headers", {}))  # case-insensitive: content-type replaces Content-Type
        return client.post(url, content=self.body, headers=headers, **request)

    def tampered(self) -> SignedWebhook:
        """A copy whose signature is well formed but wrong (one character changed), body untouched.

        Usage:

        ```python
        bad = webhooks.stripe(event, secret).tampered()
        response = await client.post("/webhooks/stripe", content=bad.body, headers=bad.headers)
        assert response.status_code == 400
        ```
        """
        signatures = {**_SIGNATURES}
        if self.signature_header is not None:
            signatures[self.signature_header.lower()] = self.signature_prefix
        for name, value in self.headers.items():
            marker = signatures.get(name.lower())
            at = -1 if marker is None else value.find(marker)
            if marker is not None and at >= 0 and at + len(marker) < len(value):
                at += len(marker)
                # '0' and '1' are hex and base64 digits alike; the first base64 digit holds six
                # bits of the digest (the last may hold padding bits that decoders ignore).
                digit = "1" if value[at] == "0" else "0"
                headers = {**self.headers, name: value[:at] + digit + value[at + 1 :]}
                return dataclasses.replace(self, headers=headers)
        msg = (
            f"This webhook has no signature header to tamper with; its headers are {sorted(self.headers)!r}. "
            "Build it with webhooks.stripe(), github(), slack(), standard() or generic()."
        )
        raise WebhookError(msg)


def stripe(
    payload: Payload,
    secret: Secret,
    *,
    timestamp: int | dt.datetime | None = None,
    age: float | dt.timedelta = 0,
) -> SignedWebhook:
    """A Stripe webhook: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">`.

    `secret` is the endpoint's signing secret as Stripe shows it ("whsec_..."), used as is.
    `timestamp` (epoch seconds or an aware datetime) defaults to `time.time()`, the frozen time
    under `harness.freeze_time`; `age` (seconds or a timedelta) is subtracted from it, for tests
    of the app's tolerance (Stripe's libraries refuse webhooks over 300 s old).

    Usage:

    ```python
    signed = webhooks.stripe({"id": "evt_1", "object": "event", "type": "invoice.paid"}, "whsec_test")
    await client.post("/webhooks/stripe", content=signed.body, headers=signed.headers)
    ```
    """
    body, key = _body(payload, "stripe"), _key(secret, "stripe")
    ts = _timestamp(timestamp, age, "stripe")
    signature = _hex(key, b"%d." % ts + body)
    headers = {"Content-Type": _JSON, "Stripe-Signature": f"t={ts},v1={signature}"}
    return SignedWebhook(body, headers, ts)


def github(
    payload: Payload, secret: Secret, *, event: str = "ping", delivery: str | None = None
) -> SignedWebhook:
    """A GitHub webhook: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.

    Also sends `X-GitHub-Event` (`event`) and `X-GitHub-Delivery` (`delivery`, a fresh uuid4 by
    default). GitHub's scheme signs no time, so `timestamp` is 0 and replays verify forever.

    Usage:

    ```python
    signed = webhooks.github({"action": "opened", "number": 7}, "s3cret", event="pull_request")
    await client.post("/hooks/github", content=signed.body, headers=signed.headers)
    ```
    """
    body, key = _body(payload, "github"), _key(secret, "github")
    headers = {
        "Content-Type": _JSON,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()) if delivery is None else delivery,
        "X-Hub-Signature-256": f"sha256={_hex(key, body)}",
    }
    return SignedWebhook(body, headers)


def slack(
    payload: Payload,
    signing_secret: Secret,
    *,
    timestamp: int | dt.datetime | None = None,
    age: float | dt.timedelta = 0,
) -> SignedWebhook:
    """A Slack request: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<ts>:<body>">`.

    Slash commands and interactions arrive form-encoded: pass the body as a str or bytes
    ("token=...&command=%2Fdeploy"), sent as is with Content-Type application/x-www-form-urlencoded.
    A dict or list is an Events API body, sent as JSON. `timestamp` and `age` work as in `stripe()`
    (the frozen time under `harness.freeze_time`); Slack asks apps to refuse requests over 5 minutes old.

    Usage:

    ```python
    signed = webhooks.slack("token=t&team_id=T1&command=%2Fdeploy&text=prod", "8f74...")
    await client.post("/slack/commands", content=signed.body, headers=signed.headers)
    ```
    """
    body, key = _body(payload, "slack"), _key(signing_secret, "slack")
    ts = _timestamp(timestamp, age, "slack")
    headers = {
        "Content-Type": _FORM if isinstance(payload, str | bytes) else _JSON,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={_hex(key, b'v0:%d:' % ts + body)}",
    }
    return SignedWebhook(body, headers, ts)


def standard(
    payload: Payload,
    secret: Secret,
    *,
    msg_id: str | None = None,
    timestamp: int | dt.datetime | None = None,
    age: float | dt.timedelta = 0,
) -> SignedWebhook:
    """A Standard Webhooks (Svix-style) webhook: `webhook-signature: v1,<base64 HMAC-SHA256>`.

    The HMAC covers "<msg_id>.<ts>.<body>" under the key the secret encodes: "whsec_" followed by
    base64, plain base64, or the raw key as bytes. `msg_id` defaults to "msg_" and random hex;
    `timestamp` and `age` work as in `stripe()` (the frozen time under `harness.freeze_time`);
    the reference verifiers refuse webhooks over 5 minutes old or ahead.

    Usage:

    ```python
    signed = webhooks.standard({"type": "user.created", "data": {"id": 1}}, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    await client.post("/webhooks", content=signed.body, headers=signed.headers)
    ```
    """
    body, key = _body(payload, "standard"), _standard_key(secret)
    ts = _timestamp(timestamp, age, "standard")
    msg_id = f"msg_{uuid.uuid4().hex}" if msg_id is None else msg_id
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": _JSON,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
    }
    return SignedWebhook(body, headers, ts)


def generic(
    payload: Payload,
    secret: Secret,
    *,
    header: str,
    signs: str = "{body}",
    algorithm: str = "sha256",
    encoding: str = "hex",
    prefix: str = "",
    timestamp_header: str | None = None,
    timestamp: int | dt.datetime | None = None,
    age: float | dt.timedelta = 0,
    headers: dict[str, str] | None = None,
) -> SignedWebhook:
    """A webhook signed with an HMAC of your provider's own scheme.

    `signs` is what is signed, with `{body}` (the body bytes) and `{timestamp}` (epoch seconds)
    where the provider puts them: "{timestamp}.{body}" for a Stripe-like scheme. The digest
    (`algorithm`: any of hashlib's, "sha256" by default) is `encoding` "hex" or "base64", and the
    header `header` carries `prefix` and the digest. With `timestamp_header` the signed time is
    sent in that header too; `timestamp` and `age` work as in `stripe()`. `headers` are added
    (Content-Type is application/json unless given).

    Usage:

    ```python
    signed = webhooks.generic(
        event, "s3cret", header="X-Acme-Signature", signs="{timestamp}:{body}",
        prefix="sha256=", timestamp_header="X-Acme-Timestamp",
    )
    response = await signed.post(app_client, "/webhooks/acme")
    ```
    """
    body, key = _body(payload, "generic"), _key(secret, "generic")
    if algorithm not in hashlib.algorithms_available:
        msg = f"generic() does not know the hash {algorithm!r}; use one of hashlib's, such as 'sha256' or 'sha1'."
        raise WebhookError(msg)
    if encoding not in ("hex", "base64"):
        msg = f"generic() encodes the digest as 'hex' or 'base64', got {encoding!r}."
        raise WebhookError(msg)
    if "{body}" not in signs:
        msg = f"generic(signs=...) must contain {{body}} where the body goes, got {signs!r}."
        raise WebhookError(msg)
    ts = _timestamp(timestamp, age, "generic")
    before, _, after = signs.partition("{body}")
    message = (
        before.replace("{timestamp}", str(ts)).encode()
        + body
        + after.replace("{timestamp}", str(ts)).encode()
    )
    digest = hmac.new(key, message, algorithm).digest()
    signature = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    sent = {"Content-Type": _JSON, **(headers or {}), header: f"{prefix}{signature}"}
    if timestamp_header is not None:
        sent[timestamp_header] = str(ts)
    return SignedWebhook(body, sent, ts, signature_header=header, signature_prefix=prefix)


# -- the pieces ----------------------------------------------------------------------------------


def _hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _body(payload: object, signer: str) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if not isinstance(payload, dict | list):
        msg = (
            f"{signer}() cannot sign a payload of type {type(payload).__name__}. Pass bytes or a str "
            "(sent as is), or a dict or list (sent as compact JSON)."
        )
        raise WebhookError(msg)
    try:
        return json.dumps(payload, separators=(",", ":")).encode()
    except (TypeError, ValueError) as error:
        msg = (
            f"{signer}() cannot encode the payload as JSON: {error}. Convert such values first "
            "(a datetime with .isoformat(), a Decimal with str()), or pass the body as bytes."
        )
        raise WebhookError(msg) from None


def _key(secret: object, signer: str) -> bytes:  # object: untyped callers pass anything
    key = secret.encode() if isinstance(secret, str) else secret
    if isinstance(key, bytes) and key:
        return key
    _refuse_secret(secret, signer)


def _refuse_secret(secret: object, signer: str) -> NoReturn:
    msg = (
        f"{signer}() needs the signing secret as a non-empty str or bytes, got "
        f"{type(secret).__name__}: {secret!r}. Pass the secret the app under test verifies with."
    )
    raise WebhookError(msg)


def _standard_key(secret: object) -> bytes:
    if not isinstance(secret, str):
        return _key(secret, "standard")
    text = secret.removeprefix("whsec_")
    if not text:
        _refuse_secret(secret, "standard")
    try:
        if not _BASE64.fullmatch(text):
            raise binascii.Error
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        # The secret stays out of the message: it may be a real one, read from the environment.
        what = "the part after 'whsec_'" if text != secret else "a secret without the 'whsec_' prefix"
        msg = (
            f"standard() reads {what} as base64, and this one is not base64. Pass the secret as the "
            "provider shows it ('whsec_' and base64), plain base64, or the raw key as bytes."
        )
        raise WebhookError(msg) from None


def _timestamp(timestamp: object, age: object, signer: str) -> int:
    if timestamp is None:
        now = int(time.time())  # looked up at call time: harness.freeze_time's frozen time
    elif isinstance(timestamp, dt.datetime) and timestamp.utcoffset() is not None:
        now = math.floor(timestamp.timestamp())
    elif isinstance(timestamp, int) and not isinstance(timestamp, bool):
        now = timestamp
    else:
        msg = (
            f"{signer}() takes timestamp as epoch seconds (an int) or an aware datetime, got "
            f"{type(timestamp).__name__}: {timestamp!r}. Give a naive datetime its zone "
            "(tzinfo=datetime.UTC), or leave timestamp out to use the current (or frozen) time."
        )
        raise WebhookError(msg)
    if isinstance(age, dt.timedelta):
        seconds = age.total_seconds()
    elif isinstance(age, int | float) and not isinstance(age, bool):
        seconds = float(age)
    else:
        seconds = math.nan  # refused below, with the value passed
    if not (math.isfinite(seconds) and seconds >= 0):
        msg = (
            f"{signer}() takes age as seconds (int or float) or a timedelta of zero or more, got "
            f"{type(age).__name__}: {age!r}. It is how old the webhook is; for one from the future, "
            "pass a later timestamp= instead."
        )
        raise WebhookError(msg)
    return math.floor(now - seconds)
