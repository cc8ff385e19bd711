"""The external services the examples mock: one MockApi per service, in a module of its own."""

from __future__ import annotations

# --8<-- [start:mocks]
from harness import MockApi, endpoint


class SmsApi(MockApi):
    base_url = "https://api.sms.example/v1"
    send_message = endpoint("POST", "/messages", status=202, json={"id": "msg_1"})


# --8<-- [end:mocks]
