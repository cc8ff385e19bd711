"""The external services the example app calls, declared once for every test."""

from __future__ import annotations

from app.sms import SMS_API_URL
from harness import MockApi, endpoint


class OpenPhoneApi(MockApi):
    """The SMS provider."""

    base_url = SMS_API_URL
    send_message = endpoint("POST", "/messages", status=202, json={"id": "msg_123", "status": "sent"})
    get_message = endpoint("GET", "/messages/{message_id}", json={"id": "msg_123", "status": "delivered"})
