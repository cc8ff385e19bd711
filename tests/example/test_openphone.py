"""The seeds' OpenPhone tests: SMS retry against a mocked provider, signed inbound webhooks."""

from __future__ import annotations

import asyncio

import pytest
from mocks import OpenPhoneApi
from sqlalchemy import func, select

from app.api import WEBHOOK_SECRET
from app.models import Message
from app.sms import SmsError, send_sms
from harness import IntegrationTest, Reply, webhooks

INBOUND = {
    "type": "message.received",
    "data": {"from": "+15551234567", "to": "+15559876543", "body": "I'm interested", "messageId": "msg_456"},
}


@pytest.mark.clock("2024-01-15 10:00 America/New_York")
class TestOpenPhoneIntegration(IntegrationTest):
    mock_apis = (OpenPhoneApi,)

    @pytest.mark.category("end-to-end")
    async def test_send_sms_with_retry(self) -> None:
        """Rate limited once, the retry after Retry-After succeeds: exactly two calls, 30 s later."""
        sms_api = self.api(OpenPhoneApi)
        sms_api.send_message.respond(Reply.rate_limited(retry_after=30), 202)
        sending = asyncio.create_task(send_sms("+15551234567", "Test message"))
        await self.clock.advance(seconds=30)
        result = await sending
        assert result["status"] == "sent"
        sms_api.send_message.assert_called_times(2)
        sms_api.send_message.assert_called_with(json={"to": "+15551234567", "content": "Test message"})
        assert self.clock.now().strftime("%H:%M:%S") == "10:00:30"

    @pytest.mark.category("edge-cases")
    async def test_send_sms_survives_a_dropped_connection(self) -> None:
        """A reset connection, then a 503, then success: three calls with back-off in between."""
        self.api(OpenPhoneApi).send_message.respond(Reply.connection_reset(), 503, 202)
        sending = asyncio.create_task(send_sms("+15551234567", "Test message"))
        await self.clock.advance(seconds=10)
        assert (await sending)["id"] == "msg_123"
        self.api(OpenPhoneApi).send_message.assert_called_times(3)

    @pytest.mark.category("edge-cases")
    async def test_send_sms_gives_up_after_three_attempts(self, open_phone_api: OpenPhoneApi) -> None:
        """Three 503s: the error reaches the caller, after exactly three calls (the mock as a fixture too)."""
        assert open_phone_api is self.api(OpenPhoneApi)
        open_phone_api.send_message.respond(503).times(3)
        sending = asyncio.create_task(send_sms("+15551234567", "Test message"))
        await self.clock.advance(seconds=10)
        with pytest.raises(SmsError, match="after 3 attempts"):
            await sending

    @pytest.mark.category("end-to-end")
    async def test_webhook_processing(self) -> None:
        """A signed inbound message is stored and visible to the test's session."""
        signed = webhooks.standard(INBOUND, WEBHOOK_SECRET)
        response = await self.client.post("/api/webhooks/sms", content=signed.body, headers=signed.headers)
        assert response.status_code == 200
        message = await self.db.scalar(select(Message).where(Message.external_id == "msg_456"))
        assert message is not None
        assert (message.from_number, message.body) == ("+15551234567", "I'm interested")

    @pytest.mark.category("validation")
    @pytest.mark.parametrize("tamper", ["signature", "stale"])
    async def test_webhook_with_a_bad_signature_is_refused(self, tamper: str) -> None:
        """A wrong signature or a timestamp older than five minutes is a 401, and nothing is stored."""
        if tamper == "signature":
            signed = webhooks.standard(INBOUND, WEBHOOK_SECRET).tampered()
        else:
            signed = webhooks.standard(INBOUND, WEBHOOK_SECRET, age=301)
        response = await self.client.post("/api/webhooks/sms", content=signed.body, headers=signed.headers)
        assert response.status_code == 401
        assert await self.db.scalar(select(func.count()).select_from(Message)) == 0
