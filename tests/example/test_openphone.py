"""The seeds' OpenPhone tests: SMS retry against a mocked provider, signed inbound webhooks."""

from __future__ import annotations

import asyncio

import pytest
from app.api import WEBHOOK_SECRET
from app.models import Message
from app.sms import SmsError, send_sms
from mocks import OpenPhoneApi
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from harness import AppClient, Clock, Reply, webhooks

INBOUND = {
    "type": "message.received",
    "data": {"from": "+15551234567", "to": "+15559876543", "body": "I'm interested", "messageId": "msg_456"},
}


@pytest.mark.clock("2024-01-15 10:00 America/New_York")
class TestOpenPhoneIntegration:
    async def test_send_sms_with_retry(self, open_phone_api: OpenPhoneApi, clock: Clock) -> None:
        """Rate limited once, the retry after Retry-After succeeds: exactly two calls, 30 s later."""
        open_phone_api.send_message.respond(Reply.rate_limited(retry_after=30), 202)
        sending = asyncio.create_task(send_sms("+15551234567", "Test message"))
        await clock.advance(seconds=30)
        result = await sending
        assert result["status"] == "sent"
        open_phone_api.send_message.assert_called_times(2)
        open_phone_api.send_message.assert_called_with(json={"to": "+15551234567", "content": "Test message"})
        assert clock.now().strftime("%H:%M:%S") == "10:00:30"

    async def test_send_sms_survives_a_dropped_connection(
        self, open_phone_api: OpenPhoneApi, clock: Clock
    ) -> None:
        """A reset connection, then a 503, then success: three calls with back-off in between."""
        open_phone_api.send_message.respond(Reply.connection_reset(), 503, 202)
        sending = asyncio.create_task(send_sms("+15551234567", "Test message"))
        await clock.advance(seconds=10)
        assert (await sending)["id"] == "msg_123"
        open_phone_api.send_message.assert_called_times(3)

    async def test_send_sms_gives_up_after_three_attempts(
        self, open_phone_api: OpenPhoneApi, clock: Clock
    ) -> None:
        """Three 503s: the error reaches the caller, after exactly three calls."""
        open_phone_api.send_message.respond(503).times(3)
        sending = asyncio.create_task(send_sms("+15551234567", "Test message"))
        await clock.advance(seconds=10)
        with pytest.raises(SmsError, match="after 3 attempts"):
            await sending

    async def test_webhook_processing(self, client: AppClient, db_session: AsyncSession) -> None:
        """A signed inbound message is stored and visible to the test's session."""
        signed = webhooks.standard(INBOUND, WEBHOOK_SECRET)
        response = await client.post("/api/webhooks/sms", content=signed.body, headers=signed.headers)
        assert response.status_code == 200
        message = await db_session.scalar(select(Message).where(Message.external_id == "msg_456"))
        assert message is not None
        assert (message.from_number, message.body) == ("+15551234567", "I'm interested")

    @pytest.mark.parametrize("tamper", ["signature", "stale"])
    async def test_webhook_with_a_bad_signature_is_refused(
        self, client: AppClient, db_session: AsyncSession, tamper: str
    ) -> None:
        """A wrong signature or a timestamp older than five minutes is a 401, and nothing is stored."""
        if tamper == "signature":
            signed = webhooks.standard(INBOUND, WEBHOOK_SECRET).tampered()
        else:
            signed = webhooks.standard(INBOUND, WEBHOOK_SECRET, age=301)
        response = await client.post("/api/webhooks/sms", content=signed.body, headers=signed.headers)
        assert response.status_code == 401
        assert await db_session.scalar(select(func.count()).select_from(Message)) == 0
