# --8<-- [start:mocks]
from harness import MockApi, endpoint


class SmsApi(MockApi):
    """The SMS provider: the one route the app calls, and what it answers."""

    base_url = "https://api.sms.example/v1"
    send_message = endpoint("POST", "/messages", status=202, json={"id": "msg_1"})


# --8<-- [end:mocks]
