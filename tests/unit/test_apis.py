"""Mock APIs on respx: declared routes, replies, failures, strictness and call assertions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import sys

import httpx
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from harness import (
    AppClient,
    MockApi,
    MockApiError,
    Reply,
    RouteNotCalledError,
    UnmatchedRequestError,
    endpoint,
    freeze_time,
)


class SmsApi(MockApi):
    base_url = "https://api.sms.test/v1"
    send_message = endpoint("POST", "/messages", status=201, json={"id": "msg_1", "status": "sent"})
    get_status = endpoint("GET", "/messages/{message_id}", json={"status": "delivered"})


URL = "https://api.sms.test/v1/messages"


async def send(client: httpx.AsyncClient, to: str = "+15551234567") -> httpx.Response:
    return await client.post(URL, json={"to": to, "body": "hi"})


# -- answering -------------------------------------------------------------------------------------


async def test_a_declared_route_answers_with_its_reply_and_records_path_params() -> None:
    """A declared route answers as declared; `{name}` segments are recorded per call."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sent = await send(client)
        status = await client.get(f"{URL}/msg_9")
    assert (sent.status_code, sent.json()) == (201, {"id": "msg_1", "status": "sent"})
    assert status.json() == {"status": "delivered"}
    assert sms.get_status.last_call.path_params == {"message_id": "msg_9"}


async def test_a_sequence_is_given_in_order_and_its_last_reply_repeats() -> None:
    """respond(503, 503, 201): two empty 503s, then the declared 201 reply for every later call."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(503, 503, 201)
        answers = [await send(client) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [503, 503, 201, 201]
    assert answers[0].content == b""
    assert answers[3].json() == {"id": "msg_1", "status": "sent"}


async def test_respond_with_keywords_replaces_the_declared_reply() -> None:
    """respond(status, json=...) is one reply for every call."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(202, json={"id": "msg_2"}, headers={"X-Request-Id": "r1"})
        answer = await send(client)
    assert (answer.status_code, answer.json(), answer.headers["x-request-id"]) == (202, {"id": "msg_2"}, "r1")


def test_the_sync_client_and_the_async_client_share_the_mock() -> None:
    """httpx.Client requests are answered too."""
    with SmsApi() as sms, httpx.Client() as client:
        answer = client.post(URL, json={"to": "+1"})
    assert answer.status_code == 201
    sms.send_message.assert_called_once_with(json={"to": "+1"})


async def test_httpx2_clients_are_answered_and_get_httpx2_errors() -> None:
    """respx does not patch httpx2; harness does, with httpx2's own exception types."""
    async with SmsApi() as sms, httpx2.AsyncClient() as client:
        answer = await client.post(URL, json={"to": "+1"})
        sms.send_message.respond(Reply.connect_error())
        with pytest.raises(httpx2.ConnectError):
            await client.post(URL, json={"to": "+1"})
        sms.send_message.respond(Reply.truncated())
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.post(URL, json={"to": "+1"})
        with pytest.raises(UnmatchedRequestError):
            await client.get("https://api.sms.test/v1/nothing")
        sms.unmatched.clear()
    assert (answer.status_code, answer.json()["id"]) == (201, "msg_1")


async def test_path_params_and_filters_pick_the_route() -> None:
    """match_params / match_json / match_headers tell routes with the same path apart."""

    class Payments(MockApi):
        base_url = "https://pay.test"
        eur = endpoint("GET", "/rates", match_params={"currency": "EUR"}, json={"rate": 1.1})
        usd = endpoint("GET", "/rates", match_params={"currency": "USD"}, json={"rate": 1.0})
        refund = endpoint("POST", "/charges", match_json={"refund": True}, status=202)
        admin = endpoint("POST", "/charges", match_headers={"X-Admin": "1"}, status=204)

    async with Payments(), httpx.AsyncClient(base_url="https://pay.test") as client:
        eur = await client.get("/rates", params={"currency": "EUR"})
        usd = await client.get("/rates", params={"currency": "USD"})
        refund = await client.post("/charges", json={"refund": True})
        admin = await client.post("/charges", json={}, headers={"X-Admin": "1"})
    assert (eur.json(), usd.json(), refund.status_code, admin.status_code) == (
        {"rate": 1.1},
        {"rate": 1.0},
        202,
        204,
    )


# -- strictness ------------------------------------------------------------------------------------


async def test_an_unmatched_request_fails_at_once_with_the_request_the_nearest_routes_and_a_route_to_paste() -> (
    None
):
    """The message shows the request, what differed for the nearest routes, and a declaration."""
    async with SmsApi() as sms, httpx.AsyncClient(headers={"User-Agent": "test"}) as client:
        with pytest.raises(UnmatchedRequestError) as excinfo:
            await client.post("https://api.sms.test/v1/message", json={"to": "+1"})
        sms.unmatched.clear()
    body = httpx.Request(
        "POST", "https://x.test", json={"to": "+1"}
    ).content  # spacing differs by httpx version
    assert str(excinfo.value) == (
        "No mock route answers this request:\n"
        "  POST https://api.sms.test/v1/message\n"
        "  headers:\n"
        "    host: api.sms.test\n"
        "    accept: */*\n"
        "    accept-encoding: gzip, deflate\n"
        "    connection: keep-alive\n"
        "    user-agent: test\n"
        f"    content-length: {len(body)}\n"
        "    content-type: application/json\n"
        f"  body: {body.decode()}\n"
        "\n"
        "Nearest routes:\n"
        "- SmsApi.send_message (POST https://api.sms.test/v1/messages): "
        "path '/v1/message' does not match '/v1/messages'\n"
        "- SmsApi.get_status (GET https://api.sms.test/v1/messages/{message_id}): "
        "path '/v1/message' does not match '/v1/messages/{message_id}'; method POST is not GET\n"
        "\n"
        "To answer it, declare the route in SmsApi:\n"
        '    post_message = harness.endpoint("POST", "/message", json={})'
    )


async def test_a_request_to_another_host_suggests_a_new_mock_class() -> None:
    """A host no mock claims gets a whole MockApi class to paste."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        with pytest.raises(UnmatchedRequestError) as excinfo:
            await client.get("https://hooks.billing.test/v2/invoices")
        sms.unmatched.clear()
    assert str(excinfo.value).endswith(
        "- SmsApi.send_message (POST https://api.sms.test/v1/messages): host https://hooks.billing.test "
        "is not https://api.sms.test; path '/v2/invoices' does not match '/v1/messages'; method GET is not POST\n"
        "\n"
        "To answer it, declare a mock of that service:\n"
        "    class HooksBillingTestApi(harness.MockApi):\n"
        '        base_url = "https://hooks.billing.test"\n'
        '        get_v2_invoices = harness.endpoint("GET", "/v2/invoices", text=\'\')'
    )


async def test_an_unmatched_request_the_code_swallowed_fails_the_mock_at_exit() -> None:
    """Retry loops that catch every exception cannot hide an unmatched request."""
    with pytest.raises(UnmatchedRequestError) as excinfo:
        async with SmsApi(), httpx.AsyncClient() as client:
            with contextlib.suppress(Exception):
                await client.get("https://api.sms.test/v1/unknown")
    message = str(excinfo.value)
    assert message.startswith(
        "SmsApi: 1 request(s) got no mock reply during the test (if the test passed, the code under test "
        "caught the error).\n\nNo mock route answers this request:\n  GET https://api.sms.test/v1/unknown\n"
    )
    assert message.endswith(
        "If the test expected it, clear the record after asserting: sms_api.unmatched.clear()."
    )


async def test_a_configured_route_left_uncalled_fails_the_mock_at_exit() -> None:
    """Configuring a route makes it an expectation; the message names it and the way out."""
    with pytest.raises(RouteNotCalledError) as excinfo:
        async with SmsApi() as sms:
            sms.send_message.respond(201)
    assert excinfo.value.args == (
        "These routes of SmsApi were expected but not called as declared:\n"
        "- SmsApi.send_message: POST https://api.sms.test/v1/messages was never called\n\n"
        "If a route may go uncalled, mark it: api.<route>.optional() in the test, "
        "or leave it unconfigured (declared routes are optional until a test configures them).",
    )


async def test_declared_routes_and_optional_routes_may_go_uncalled() -> None:
    """The catalogue of a service is not an expectation; optional() lifts one."""
    async with SmsApi() as sms:
        sms.send_message.respond(201).optional()
    assert not sms.send_message.called


async def test_a_route_declared_required_must_be_called() -> None:
    """endpoint(required=True) fails a test that never calls it."""

    class Auth(MockApi):
        base_url = "https://auth.test"
        token = endpoint("POST", "/token", json={"access_token": "t"}, required=True)

    with (
        pytest.raises(
            RouteNotCalledError, match=r"Auth\.token: POST https://auth\.test/token was never called"
        ),
        Auth(),
    ):
        pass


async def test_times_caps_the_calls_and_expects_them_all() -> None:
    """times(2): a third call fails at once; one call fails at exit."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.times(2)
        await send(client)
        await send(client)
        with pytest.raises(
            UnmatchedRequestError,
            match=r"^SmsApi.send_message was called more often than expected: this is call 3",
        ) as excinfo:
            await send(client)
        assert excinfo.value.__cause__ is None
        assert excinfo.value.__suppress_context__
        sms.unmatched.clear()
    with pytest.raises(
        RouteNotCalledError, match=r"SmsApi.send_message: POST \S+ called 1 time\(s\), expected 2"
    ):
        async with SmsApi() as sms, httpx.AsyncClient() as client:
            sms.send_message.times(2)
            await send(client)


async def test_an_exception_on_its_way_out_wins_over_the_mock_checks() -> None:
    """The test's own failure is what the user sees, not an uncalled route."""
    with pytest.raises(ZeroDivisionError):
        async with SmsApi() as sms:
            sms.send_message.respond(201)
            _ = 1 / 0


def test_two_routes_matching_the_same_requests_are_refused_at_class_creation() -> None:
    """A route declared twice would never answer: the class says so."""
    with pytest.raises(MockApiError) as excinfo:

        class Twice(MockApi):
            base_url = "https://twice.test"
            send = endpoint("POST", "/messages")
            send_again = endpoint("POST", "/messages", status=202)

    assert excinfo.value.args == (
        "Twice.send_again and Twice.send both match POST /messages: the second would never answer. "
        "Remove one, or tell them apart with match_params=, match_json= or match_headers=.",
    )


def test_two_active_mocks_of_the_same_routes_are_refused() -> None:
    """Two instances of one mock active at once would shadow each other."""
    with SmsApi(), pytest.raises(MockApiError, match=r"SmsApi.send_message \(POST .*\) is declared twice"):
        SmsApi().start()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Reply(429, headers={"Retry-After": "soon"}),
            "Invalid Retry-After header 'soon': it is whole seconds ('30') or an HTTP date "
            "('Wed, 21 Oct 2015 07:28:00 GMT'). Use Reply.rate_limited(retry_after=...) to build one.",
        ),
        (
            lambda: Reply.rate_limited(retry_after=1.5),
            "Retry-After is a whole number of seconds >= 0 (RFC 9110), got 1.5. "
            "Round it, or pass a datetime for the HTTP-date form.",
        ),
        (lambda: Reply(42), "A reply's status must be an HTTP status code (100-599), got 42."),
        (
            lambda: Reply(json={}, text="x"),
            "A reply has one body; got json and text. Pass one of json=, text= or content=.",
        ),
        (
            lambda: endpoint("FETCH", "/x"),
            "Unknown HTTP method 'FETCH'. Use one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE.",
        ),
        (
            lambda: endpoint("GET", "x?y=1"),
            "An endpoint path starts with '/' and has no query string, got 'x?y=1'. Match query parameters with match_params={...}.",
        ),
    ],
)
def test_bad_declarations_are_refused_with_the_fix(build: object, message: str) -> None:
    """Each bad reply or route names the value and the fix."""
    with pytest.raises(MockApiError) as excinfo:
        build()  # type: ignore[operator]
    assert excinfo.value.args == (message,)


def test_a_base_url_must_be_absolute() -> None:
    """A relative base_url is refused when the class is made."""
    with pytest.raises(MockApiError, match=r"Relative.base_url must be an absolute http\(s\) URL"):

        class Relative(MockApi):
            base_url = "/v1"
            ping = endpoint("GET", "/ping")


# -- the catalogue of failures ---------------------------------------------------------------------


async def test_rate_limits_carry_retry_after_in_seconds_or_as_an_http_date_on_the_harness_clock() -> None:
    """Retry-After: 30, or the date 30 s after the frozen now."""
    with freeze_time("2024-01-15 12:00:00"):
        seconds = Reply.rate_limited(retry_after=30).response(httpx.Request("GET", URL))
        date = Reply.rate_limited(retry_after=30, http_date=True).response(httpx.Request("GET", URL))
    assert (seconds.status_code, seconds.headers["Retry-After"]) == (429, "30")
    assert date.headers["Retry-After"] == "Mon, 15 Jan 2024 12:00:30 GMT"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply.connect_error(), httpx.ConnectError),
        (Reply.connection_reset(), httpx.ReadError),
        (Reply.raises(httpx.ConnectTimeout), httpx.ConnectTimeout),
        (Reply.raises(RuntimeError("proxy down")), RuntimeError),
    ],
)
async def test_failing_replies_raise_what_httpx_raises(reply: Reply, error: type[Exception]) -> None:
    """Connection failures surface as httpx's own exceptions, and the call is still recorded."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(reply)
        with pytest.raises(error):
            await send(client)
    assert sms.send_message.call_count == 1
    assert sms.send_message.last_call.response is None


async def test_a_malformed_or_truncated_body_fails_when_read() -> None:
    """Malformed JSON fails in response.json(); a truncated body fails while reading."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(Reply.malformed_json())
        malformed = await send(client)
        with pytest.raises(json.JSONDecodeError):
            malformed.json()
        sms.send_message.respond(Reply.truncated())
        whole = len(httpx.Response(200, json={"id": "msg_1", "status": "sent"}).content)  # 30 on httpx 0.28
        with pytest.raises(
            httpx.RemoteProtocolError, match=rf"received {whole // 2} bytes, expected {whole}\)"
        ):
            await send(client)


async def test_a_reply_later_than_the_read_timeout_raises_read_timeout_on_the_harness_clock() -> None:
    """delay=2 under timeout=0.1 is a ReadTimeout after 0.1 s of harness time, not a 200."""
    async with SmsApi() as sms, httpx.AsyncClient(timeout=0.1) as client:
        sms.send_message.respond(Reply(201, delay=2))
        with freeze_time("2024-01-15 12:00:00") as clock:
            with pytest.raises(httpx.ReadTimeout, match=r"after 2s, past the request's read timeout of 0.1s"):
                await send(client)
            assert clock.now().isoformat() == "2024-01-15T12:00:00.100000+00:00"


async def test_a_late_reply_within_the_timeout_answers_after_its_delay() -> None:
    """delay=5 under timeout=10: the answer comes, 5 s later on the harness clock."""
    async with SmsApi() as sms, httpx.AsyncClient(timeout=10) as client:
        sms.send_message.respond(Reply(201, delay=5))
        with freeze_time("2024-01-15 12:00:00") as clock:
            answer = await send(client)
            assert clock.now().isoformat() == "2024-01-15T12:00:05+00:00"
    assert answer.status_code == 201


async def test_a_late_reply_past_the_timeout_without_a_clock_fails_at_once() -> None:
    """Without a harness clock, waiting out an hour's read timeout would only slow the test: it raises now."""
    async with SmsApi() as sms, httpx.AsyncClient(timeout=3600) as client:
        sms.send_message.respond(Reply(201, delay=math.inf))
        with pytest.raises(httpx.ReadTimeout):
            await asyncio.wait_for(send(client), 30)  # a TimeoutError here if it waited


async def test_a_server_that_never_answers_a_request_without_timeout_says_so() -> None:
    """read_timeout() on a client without timeout would hang for real: the error says why."""
    async with SmsApi() as sms, httpx.AsyncClient(timeout=None) as client:
        sms.send_message.respond(Reply.read_timeout())
        with pytest.raises(httpx.ReadTimeout, match="this request has no read timeout"):
            await send(client)


async def test_a_retry_after_a_30_second_back_off_runs_in_harness_time() -> None:
    """Rate limited, wait Retry-After, retry: two calls, 30 s later on the clock."""

    async def send_with_retry(client: httpx.AsyncClient) -> httpx.Response:
        answer = await send(client)
        if answer.status_code == 429:
            await asyncio.sleep(int(answer.headers["Retry-After"]))
            answer = await send(client)
        return answer

    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(Reply.rate_limited(retry_after=30), 201)
        with freeze_time("2024-01-15 12:00:00") as clock:
            task = asyncio.create_task(send_with_retry(client))
            await clock.advance(seconds=30)
            answer = await asyncio.wait_for(task, 1)
            assert clock.now().isoformat() == "2024-01-15T12:00:30+00:00"
    assert answer.status_code == 201
    sms.send_message.assert_called_times(2)


# -- scenarios and fakes ---------------------------------------------------------------------------


async def test_scenario_states_move_with_replies_and_choose_them() -> None:
    """created → queued → delivered, the way WireMock scenarios work."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(201, moves_to="queued")
        sms.get_status.respond(json={"status": "queued"}, moves_to="delivered", when="queued")
        sms.get_status.respond(json={"status": "delivered"}, when="delivered")
        before = await client.get(f"{URL}/msg_1")
        await send(client)
        first = await client.get(f"{URL}/msg_1")
        second = await client.get(f"{URL}/msg_1")
        assert sms.state == "delivered"
    assert [r.json()["status"] for r in (before, first, second)] == ["delivered", "queued", "delivered"]


async def test_a_fake_api_can_be_a_small_asgi_app_behind_the_declared_routes() -> None:
    """Requests no declared route answers go to the mock's ASGI app."""

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"echo": request.path_params["word"]})

    class Dictionary(MockApi):
        base_url = "https://dict.test/api"
        app = Starlette(routes=[Route("/api/echo/{word}", echo)])
        health = endpoint("GET", "/health", json={"ok": True})

    async with Dictionary() as fake, httpx.AsyncClient(base_url="https://dict.test") as client:
        echoed = await client.get("/api/echo/hello")
        health = await client.get("/api/health")
    assert (echoed.json(), health.json()) == ({"echo": "hello"}, {"ok": True})
    assert fake.health.call_count == 1


async def test_requests_to_loopback_pass_through_to_the_local_server() -> None:
    """A local server is not an external API: its requests are not mocked."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlocal")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, SmsApi(), httpx.AsyncClient() as client:
        local = await client.get(f"http://127.0.0.1:{port}/")
    assert local.text == "local"


async def test_the_app_clients_requests_never_reach_the_mocks() -> None:
    """Even a mock of the app's own base URL does not see AppClient requests."""

    class Shadow(MockApi):
        base_url = "http://testserver"
        everything = endpoint("GET", "/hello", json={"from": "mock"})

    async def hello(_request: Request) -> JSONResponse:
        return JSONResponse({"from": "app"})

    app = Starlette(routes=[Route("/hello", hello)])
    async with Shadow() as shadow, AppClient(app) as client:
        answer = await client.get("/hello")
    assert answer.json() == {"from": "app"}
    shadow.everything.assert_not_called()


# -- call assertions -------------------------------------------------------------------------------


async def test_call_assertions_pass_on_what_was_sent() -> None:
    """json, params, headers (a subset) and path_params compare against the recorded calls."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        await client.post(URL, json={"to": "+1", "body": "hi"}, params={"dry": "1"}, headers={"X-Key": "k"})
        await client.get(f"{URL}/msg_7")
    sms.send_message.assert_called_once_with(
        json={"to": "+1", "body": "hi"}, params={"dry": "1"}, headers={"X-Key": "k"}
    )
    sms.get_status.assert_called_with(path_params={"message_id": "msg_7"})
    sms.send_message.assert_any_call(json={"body": "hi", "to": "+1"})
    assert [call.method for call in sms.calls] == ["POST", "GET"]


async def test_a_callable_or_an_httpx_response_answers_too() -> None:
    """respond(callable) computes each reply from its request; respond(httpx.Response) answers as it is."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        ids = itertools.count(1)
        sms.send_message.respond(
            lambda request: Reply(
                201, json={"id": f"msg_{next(ids)}", "to": json.loads(request.content)["to"]}
            )
        )
        first, second = await send(client, "+1"), await send(client, "+2")
        sms.get_status.respond(httpx.Response(410, headers={"X-Why": "gone"}, text="expired"))
        gone = await client.get(f"{URL}/msg_1")
        sms.get_status.respond(Reply.computed(lambda request: 404 if request.url.path.endswith("x") else 200))
        statuses = [(await client.get(f"{URL}/{name}")).status_code for name in ("x", "y")]
    assert (first.json(), second.json()) == ({"id": "msg_1", "to": "+1"}, {"id": "msg_2", "to": "+2"})
    assert (gone.status_code, gone.headers["x-why"], gone.text) == (410, "gone", "expired")
    assert statuses == [404, 200]
    assert sms.send_message.calls.last.json == {"to": "+2", "body": "hi"}
    assert sms.calls.last.path_params == {"message_id": "y"}


async def test_a_computed_reply_moves_the_scenario_and_a_response_keeps_its_repeated_headers() -> None:
    """The Reply a callable returns moves the state with its moves_to; Set-Cookie twice stays twice."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(lambda request: Reply(201, json={"id": "msg_1"}, moves_to="sent"))
        await send(client)
        cookies = httpx.Response(200, headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], json={})
        sms.get_status.respond(cookies)
        answer = await client.get(f"{URL}/msg_1")
    assert sms.state == "sent"
    assert answer.headers.get_list("set-cookie") == ["a=1", "b=2"]


async def test_a_callable_answering_something_else_is_refused() -> None:
    """What the callable returns must be a status, a Reply or an httpx.Response."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sms.send_message.respond(lambda request: {"id": "msg_1"})
        with pytest.raises(MockApiError) as excinfo:
            await send(client)
    assert str(excinfo.value) == (
        "The callable given to respond() is a status code, a harness.Reply or an httpx.Response, "
        "got {'id': 'msg_1'}."
    )


async def test_calls_last_of_a_route_never_called_says_so() -> None:
    """calls.last with no call is an AssertionError, not an IndexError."""
    async with SmsApi() as sms:
        with pytest.raises(AssertionError, match=r"^No call was received, so there is no last one.$"):
            _ = sms.send_message.calls.last


async def test_call_listings_show_the_body_and_where_it_was_sent_from() -> None:
    """A listing line has the method, URL, the start of the body and the line that sent it."""
    payload = {"to": "+1", "body": "x" * 200}
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        sent_at = sys._getframe().f_lineno + 1
        await client.post(URL, json=payload)
    with pytest.raises(AssertionError) as excinfo:
        sms.send_message.assert_not_called()
    body = httpx.Request("POST", URL, json=payload).content.decode()  # spacing differs by httpx version
    here = __file__.removeprefix(os.getcwd() + os.sep)
    assert str(excinfo.value) == (
        "SmsApi.send_message was called 1 time(s), expected none:\n"
        f"- POST {URL} {body[:120]}… (sent at {here}:{sent_at} in "
        "test_call_listings_show_the_body_and_where_it_was_sent_from)"
    )


async def test_a_call_assertion_failure_shows_what_differed() -> None:
    """The message lists the keys that differ, missing and unexpected."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        await client.post(URL, json={"to": "+2", "extra": True})
    with pytest.raises(AssertionError) as excinfo:
        sms.send_message.assert_called_once_with(json={"to": "+3", "body": "x"})
    assert str(excinfo.value) == (
        "The last call to SmsApi.send_message differs from what was expected:\n"
        "json differs:\n"
        "  'body': missing (expected 'x')\n"
        "  'extra': unexpected (True)\n"
        "  'to': expected '+3', got '+2'"
    )
    with pytest.raises(
        AssertionError, match=r"^SmsApi.send_message was called 1 time\(s\), expected 2.\n- POST"
    ):
        sms.send_message.assert_called_times(2)
    with pytest.raises(
        AssertionError, match=r"^SmsApi.get_status \(GET .*\) was not called.\nSmsApi received:\n- POST"
    ):
        sms.get_status.assert_called()
    with pytest.raises(TypeError, match="Unknown call field 'body'"):
        sms.send_message.assert_called_with(body="x")


# -- ways to activate ------------------------------------------------------------------------------


@SmsApi()
async def _decorated_async(sms_api: SmsApi) -> int:
    async with httpx.AsyncClient() as client:
        await send(client)
    return sms_api.send_message.call_count


@SmsApi()
def _decorated_sync(sms_api: SmsApi) -> int:
    with httpx.Client() as client:
        client.post(URL, json={})
    return sms_api.send_message.call_count


async def test_a_mock_decorates_sync_and_async_functions_with_a_fresh_instance() -> None:
    """The parameter named after the API receives the active mock; each call gets a new one."""
    assert await _decorated_async() == 1  # type: ignore[call-arg]
    assert await _decorated_async() == 1  # type: ignore[call-arg]
    assert _decorated_sync() == 1  # type: ignore[call-arg]


async def test_routes_can_be_configured_before_the_mock_is_entered() -> None:
    """An instance keeps its configuration across entry; calls reset on each entry."""
    sms = SmsApi()
    sms.send_message.respond(202)
    async with sms, httpx.AsyncClient() as client:
        assert (await send(client)).status_code == 202
    async with sms, httpx.AsyncClient() as client:
        await send(client)
        assert sms.send_message.call_count == 1


async def test_no_request_is_mocked_once_every_mock_has_exited() -> None:
    """httpcore and httpcore2 are unpatched after the last mock exits."""
    import httpcore
    import httpcore2

    originals = (
        httpcore.AsyncConnectionPool.handle_async_request,
        httpcore2.AsyncConnectionPool.handle_async_request,
    )
    async with SmsApi():
        patched = (
            httpcore.AsyncConnectionPool.handle_async_request,
            httpcore2.AsyncConnectionPool.handle_async_request,
        )
    after = (
        httpcore.AsyncConnectionPool.handle_async_request,
        httpcore2.AsyncConnectionPool.handle_async_request,
    )
    assert patched[0] is not originals[0]
    assert patched[1] is not originals[1]
    assert after == originals


# -- found in review -------------------------------------------------------------------------------


async def test_a_late_reply_inside_the_tests_own_advance_joins_it() -> None:
    """A delay that starts while the test advances the clock rides that advance: no second one, no real wait."""
    async with SmsApi() as sms, httpx.AsyncClient(timeout=10) as client:
        sms.send_message.respond(Reply(201, delay=2))
        with freeze_time("2024-01-15 12:00:00") as clock:
            sending = asyncio.create_task(send(client))
            await clock.advance(seconds=30)
            assert sending.done()
            assert (await sending).status_code == 201
            assert clock.now().isoformat() == "2024-01-15T12:00:30+00:00"


async def test_keywords_keep_the_declared_reply_and_sequences_restart_on_entry() -> None:
    """respond(202, moves_to=...) keeps the declared body; a re-entered mock starts its sequence over."""
    sms = SmsApi()
    async with sms, httpx.AsyncClient() as client:
        sms.send_message.respond(201, moves_to="queued")
        assert (await send(client)).json() == {"id": "msg_1", "status": "sent"}
        sms.send_message.respond(503, 201)
        await send(client)
    async with sms, httpx.AsyncClient() as client:
        assert (await send(client)).status_code == 503


async def test_an_optional_route_with_times_only_caps_the_calls() -> None:
    """times(2).optional() may go uncalled."""
    async with SmsApi() as sms:
        sms.send_message.times(2).optional()


def test_an_unmatched_request_is_charged_to_the_mock_of_its_host() -> None:
    """With two mocks active, the one whose host was asked reports it."""

    class Billing(MockApi):
        base_url = "https://billing.test"
        invoices = endpoint("GET", "/invoices")

    sms, billing = SmsApi().start(), Billing().start()
    try:
        with pytest.raises(UnmatchedRequestError):
            httpx.get("https://api.sms.test/v1/nope")
        assert (len(sms.unmatched), len(billing.unmatched)) == (1, 0)
    finally:
        billing.stop()
        sms.stop(check=False)


async def test_a_plain_respx_mock_beside_a_harness_mock_answers_its_own_routes() -> None:
    """respx hands the request on; the harness mock does not count it as unmatched."""
    import respx

    async with SmsApi() as sms, httpx.AsyncClient() as client:
        with respx.mock(assert_all_called=False) as other:
            other.get("https://other.test/y").respond(200, json={"other": True})
            assert (await client.get("https://other.test/y")).json() == {"other": True}
        assert sms.unmatched == []


def test_an_asgi_fake_tells_a_sync_client_to_go_async() -> None:
    """respx's ASGI handler is async-only: a sync request gets a MockApiError, not a bare assert."""

    class Fake(MockApi):
        base_url = "https://fake.test"
        app = Starlette(routes=[])

    with Fake(), httpx.Client() as client, pytest.raises(MockApiError, match="answers async clients only"):
        client.get("https://fake.test/x")


async def test_an_http_date_retry_after_is_read_off_the_clock_when_sent() -> None:
    """The date is 30 s after the moment of the reply, not of its declaration."""
    reply = Reply.rate_limited(retry_after=30, http_date=True)
    with freeze_time("2024-01-15 12:00:00") as clock:
        clock.tick(60)
        answer = reply.response(httpx.Request("GET", URL))
    assert answer.headers["Retry-After"] == "Mon, 15 Jan 2024 12:01:30 GMT"


async def test_raises_builds_httpx2_errors_too() -> None:
    """Reply.raises(httpx2.ConnectTimeout) raises it, message and all."""
    async with SmsApi() as sms, httpx2.AsyncClient() as client:
        sms.send_message.respond(Reply.raises(httpx2.ConnectTimeout))
        with pytest.raises(httpx2.ConnectTimeout):
            await client.post(URL, json={})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Reply(delay=-1),
            "A reply's delay is a number of seconds >= 0 (math.inf never answers), got -1.",
        ),
        (
            lambda: Reply.rate_limited(retry_after=dt.datetime(2024, 1, 15, 12)),
            "Retry-After as a date needs an aware datetime, got naive datetime.datetime(2024, 1, 15, 12, 0). "
            "Add tzinfo=datetime.UTC.",
        ),
        (
            lambda: Reply.truncated(keep=1),
            "Reply.truncated(keep=...) is the part of the body sent, in [0, 1), got 1.",
        ),
        (
            lambda: SmsApi().send_message.respond(503, Reply(201), json={}),
            "Pass either replies (respond(503, Reply(201, json=...))) or one reply's fields "
            "(respond(201, json=...)), not both.",
        ),
        (
            lambda: SmsApi().send_message.respond("201"),
            "A reply is a status code, a harness.Reply or an httpx.Response, got '201'.",
        ),
        (
            lambda: MockApi(),
            "MockApi has no base_url: subclass MockApi and set base_url = 'https://...'.",
        ),
    ],
)
def test_more_bad_replies_are_refused_with_the_fix(build: object, message: str) -> None:
    """Each message names the value and the fix."""
    with pytest.raises(MockApiError) as excinfo:
        build()  # type: ignore[operator]
    assert excinfo.value.args == (message,)


def test_a_reply_error_that_cannot_be_built_says_to_pass_an_instance() -> None:
    """An exception class with a constructor harness cannot call is refused when the reply is sent."""

    class Picky(Exception):
        def __init__(self, a: int, b: int, c: int) -> None:
            super().__init__(a, b, c)

    with SmsApi() as sms, httpx.Client() as client:
        sms.send_message.respond(Reply.raises(Picky))
        with pytest.raises(MockApiError) as excinfo:
            client.post(URL, json={})
    assert excinfo.value.args == ("Reply.raises() cannot build Picky; pass an instance instead.",)


def test_a_mock_entered_twice_says_so() -> None:
    """One instance, one activation at a time."""
    with SmsApi() as sms, pytest.raises(MockApiError) as excinfo:
        sms.start()
    assert excinfo.value.args == (
        "<SmsApi https://api.sms.test/v1 active> is already active; enter each mock once (or make another instance).",
    )


async def test_assert_any_call_shows_the_closest_call() -> None:
    """The call with the fewest differences is shown."""
    async with SmsApi() as sms, httpx.AsyncClient() as client:
        await client.post(URL, json={"to": "+1"})
        await client.post(URL, json={"to": "+2", "body": "x"})
    with pytest.raises(AssertionError) as excinfo:
        sms.send_message.assert_any_call(json={"to": "+2"})
    assert str(excinfo.value) == (
        "No call to SmsApi.send_message had the expected fields (2 call(s)); the closest one differs:\n"
        "json differs:\n"
        "  'to': expected '+2', got '+1'"
    )
