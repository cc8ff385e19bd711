"""External API mocks: a declared service, a retry after a rate limit, scenarios, a fake on an ASGI app."""

from __future__ import annotations

# --8<-- [start:mock]
from harness import MockApi, endpoint


class OpenPhoneApi(MockApi):
    base_url = "https://api.openphone.test/v1"
    send_message = endpoint("POST", "/messages", status=202, json={"id": "msg_123", "status": "sent"})
    get_message = endpoint("GET", "/messages/{message_id}", json={"status": "delivered"})


# --8<-- [end:mock]


# --8<-- [start:register]
from harness import register_api

register_api(OpenPhoneApi)  # the `open_phone_api` fixture
# --8<-- [end:register]


# --8<-- [start:retry]
import asyncio

from harness import Reply


async def test_send_sms_with_retry(open_phone_api, clock):
    """A 429 makes send_sms wait 30 s on the harness clock, then the retry goes through."""
    open_phone_api.send_message.respond(Reply.rate_limited(retry_after=30), 202)
    sending = asyncio.create_task(send_sms("+15551234567", "Test message"))
    await clock.advance(seconds=30)  # the 30 s back-off runs in harness time
    assert (await sending)["status"] == "sent"
    open_phone_api.send_message.assert_called_times(2)


# --8<-- [end:retry]


# The code under test: the app's client of the provider (not shown on the page).
import httpx


async def send_sms(to, text):
    """Send one message; on a 429, wait as long as Retry-After says and try again (three tries)."""
    async with httpx.AsyncClient(base_url=OpenPhoneApi.base_url) as http:
        for _ in range(3):
            response = await http.post("/messages", json={"to": to, "text": text})
            if response.status_code != 429:
                break
            await asyncio.sleep(int(response.headers["Retry-After"]))
        response.raise_for_status()
        return response.json()


async def message_status(message_id):
    """The provider's delivery status of a message."""
    async with httpx.AsyncClient(base_url=OpenPhoneApi.base_url) as http:
        response = await http.get(f"/messages/{message_id}")
        response.raise_for_status()
        return response.json()["status"]


# --8<-- [start:scenario]
async def test_a_message_is_queued_then_delivered(open_phone_api):
    """The mock's scenario state moves with each reply, and the status route answers by state."""
    open_phone_api.send_message.respond(202, moves_to="queued")
    open_phone_api.get_message.respond(json={"status": "queued"}, when="queued", moves_to="delivered")
    open_phone_api.get_message.respond(json={"status": "delivered"}, when="delivered")

    message = await send_sms("+15551234567", "Test message")  # the declared body: {"id": "msg_123", ...}
    assert await message_status(message["id"]) == "queued"
    assert await message_status(message["id"]) == "delivered"


# --8<-- [end:scenario]


# --8<-- [start:fake]
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def echo(request):
    return JSONResponse({"word": request.path_params["word"]})


class Dictionary(MockApi):
    base_url = "https://dict.test/api"
    app = Starlette(routes=[Route("/api/echo/{word}", echo)])
    health = endpoint("GET", "/health", json={"ok": True})


# --8<-- [end:fake]


@Dictionary()
async def test_the_fake_serves_what_no_route_declares(dictionary):
    """The ASGI app answers /echo/...; the declared route answers /health; the decorator passes the mock."""
    async with httpx.AsyncClient(base_url=Dictionary.base_url) as http:
        assert (await http.get("/echo/hello")).json() == {"word": "hello"}
        assert (await http.get("/health")).json() == {"ok": True}
    dictionary.health.assert_called_once()
    assert [call.url.path for call in dictionary.calls] == ["/api/health"]  # the app's calls are its own
