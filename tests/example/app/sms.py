"""The SMS provider's API client: send with retry on rate limits, server errors and lost connections."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

SMS_API_URL = "https://api.openphone.test/v1"
ATTEMPTS = 3
BACKOFF_SECONDS = 2.0


class SmsError(Exception):
    """The provider did not accept the message after every attempt."""


async def send_sms(to: str, body: str, *, client: httpx.AsyncClient | None = None) -> dict[str, Any]:
    """POST the message; on 429 wait its Retry-After, on 5xx or a connection error back off, then retry."""
    async with client or httpx.AsyncClient(base_url=SMS_API_URL, timeout=5.0) as http:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await http.post(f"{SMS_API_URL}/messages", json={"to": to, "content": body})
            except httpx.TransportError:
                wait = BACKOFF_SECONDS * attempt
            else:
                if response.status_code < 300:
                    result: dict[str, Any] = response.json()
                    return result
                if response.status_code == 429:
                    wait = float(response.headers.get("Retry-After", BACKOFF_SECONDS))
                elif response.status_code >= 500:
                    wait = BACKOFF_SECONDS * attempt
                else:
                    msg = f"the provider refused the message: {response.status_code} {response.text}"
                    raise SmsError(msg)
            if attempt < ATTEMPTS:
                await asyncio.sleep(wait)
    msg = f"the provider did not accept the message after {ATTEMPTS} attempts"
    raise SmsError(msg)
