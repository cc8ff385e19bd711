"""Mock external HTTP APIs on respx: one declared class per service, strict about what it is asked.

    class SmsApi(MockApi):
        base_url = "https://api.sms.test/v1"
        send_message = endpoint("POST", "/messages", status=201, json={"id": "msg_1", "status": "sent"})
        get_status = endpoint("GET", "/messages/{message_id}", json={"status": "delivered"})

    async with SmsApi() as sms:
        sms.send_message.respond(Reply.rate_limited(retry_after=30), 201)   # 429, then 201 from then on
        await service.send("+15551234567", "hello")
        sms.send_message.assert_called_times(2)

A `MockApi` works as a context manager, an async context manager and a decorator; the plugin turns
it into a fixture with `register_api(SmsApi)`. While any mock API is active, every request made with
httpx (or httpx2) goes through one respx router: a request that no route answers raises
`UnmatchedRequestError` at once, with the nearest routes and a route to paste, and fails the
mock's exit even if the code under test swallowed it. Requests to loopback hosts pass through (a
local server is not an external API), unless an active mock claims that host. The app client's
ASGI requests never reach the router at all.

Declared routes are the service's catalogue and may go uncalled; a route the test configures
(`respond`, `times`, `once`) is an expectation and must be called by the end, unless marked
`optional()`. Replies can be late (`delay=`, run on the harness clock when one runs, and a
`httpx.ReadTimeout` when later than the request's read timeout), fail (`Reply.connect_error()`,
`Reply.read_timeout()`, `Reply.connection_reset()`, `Reply.malformed_json()`, `Reply.truncated()`),
rate-limit (`Reply.rate_limited(retry_after=...)`) and move the API's scenario `state`.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import difflib
import email.utils
import functools
import inspect
import json as jsonlib
import math
import pprint
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar, cast

import httpx
import respx
from respx.mocks import HTTPCoreMocker, Mocker
from respx.models import Call, PassThrough, SideEffectError
from respx.patterns import M, Pattern

from harness import clock
from harness._where import Where
from harness.exceptions import MockApiError, RouteNotCalledError, UnmatchedRequestError
from harness.network import is_loopback_host

if TYPE_CHECKING:
    from typing import Self

__all__ = ["MockApi", "MockRoute", "RecordedCall", "Reply", "endpoint"]

P = ParamSpec("P")
R = TypeVar("R")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
_MISSING: Any = object()
_INITIAL_STATE = "started"
_DELAY = "harness.delay"  # response extension: seconds the mock waits before answering
_SITE = "harness.site"  # request extension: where the code under test sent it from
# Where a request came from: past the HTTP clients' own frames.
_request_site = Where(
    httpx, respx, asyncio, "httpcore", "anyio", "sniffio", "httpx2", "aiohttp", "requests", "urllib3"
)
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NEAREST = 3


def _is_number(value: object, kind: type | tuple[type, ...] = (int, float)) -> bool:
    """A real number of `kind`, not a bool: arguments are checked for untyped callers too."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _check(condition: bool, msg: str) -> None:
    if not condition:
        raise MockApiError(msg)


# -- replies ---------------------------------------------------------------------------------------


class _TruncatedStream(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A body that stops part-way, as when the server dies mid-response: reading it fails."""

    def __init__(self, sent: bytes, expected: int) -> None:
        self.sent, self.expected = sent, expected

    def _error(self) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body "
            f"(received {len(self.sent)} bytes, expected {self.expected})"
        )

    def __iter__(self) -> Iterator[bytes]:
        yield self.sent
        raise self._error()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.sent
        raise self._error()


class Reply:
    """One answer of a mock route: a response (maybe late), or a failure to answer.

    Positional ints stand for `Reply(status)` wherever replies are taken. `delay` (seconds) makes
    the answer late: the wait runs on the harness clock when one runs, and a delay longer than the
    request's read timeout raises `httpx.ReadTimeout`, as a slow server would. `moves_to` sets the
    API's scenario `state` once this reply is given.

    Usage:

    ```python
    sms.send_message.respond(503, 503, Reply(201, json={"id": "msg_1"}))
    sms.send_message.respond(Reply.rate_limited(retry_after=30), 201)
    sms.get_status.respond(json={"status": "queued"}, moves_to="delivered")
    ```
    """

    def __init__(
        self,
        status: int = 200,
        *,
        json: Any = _MISSING,
        text: str | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        moves_to: str | None = None,
    ) -> None:
        _check(
            _is_number(status, int) and 100 <= status <= 599,
            f"A reply's status must be an HTTP status code (100-599), got {status!r}.",
        )
        bodies = [
            name
            for name, value in (("json", json), ("text", text), ("content", content))
            if value not in (_MISSING, None)
        ]
        _check(
            len(bodies) <= 1,
            f"A reply has one body; got {' and '.join(bodies)}. Pass one of json=, text= or content=.",
        )
        _check(
            _is_number(delay) and delay >= 0 and not math.isnan(delay),
            f"A reply's delay is a number of seconds >= 0 (math.inf never answers), got {delay!r}.",
        )
        self.status = status
        # httpx.Headers keeps repeated headers (Set-Cookie) apart; a dict would join them.
        self.headers = headers.copy() if isinstance(headers, httpx.Headers) else dict(headers or {})
        for name, value in self.headers.items():
            if name.lower() == "retry-after":
                _check_retry_after(value)
        self.delay = float(delay)
        self.moves_to = moves_to
        self._json, self._text, self._content = json, text, content
        self._error: Callable[[httpx.Request], Exception] | None = None
        self._compute: Callable[[httpx.Request], Any] | None = None
        self._truncate_at: float | None = None
        self._retry_after_date: float | None = None

    def __repr__(self) -> str:
        if self._error is not None:
            return f"<Reply {self._error.__name__}>"
        return f"<Reply {self.status}{f' after {self.delay:g}s' if self.delay else ''}>"

    # -- the catalogue of failures -------------------------------------------------------------

    @classmethod
    def rate_limited(
        cls,
        retry_after: float | dt.timedelta | dt.datetime = 1,
        *,
        http_date: bool = False,
        json: Any = _MISSING,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """429 Too Many Requests with a `Retry-After` header: seconds, or an HTTP date.

        `retry_after` is seconds or a timedelta (sent as whole seconds, or as the HTTP date that far
        from now on the harness clock with `http_date=True`), or an aware datetime (an HTTP date).
        """
        if isinstance(retry_after, dt.datetime):
            _check(
                retry_after.tzinfo is not None,
                f"Retry-After as a date needs an aware datetime, got naive {retry_after!r}. Add tzinfo=datetime.UTC.",
            )
            value = email.utils.format_datetime(retry_after.astimezone(dt.UTC), usegmt=True)
        else:
            seconds = retry_after.total_seconds() if isinstance(retry_after, dt.timedelta) else retry_after
            _check(
                _is_number(seconds) and seconds >= 0 and float(seconds).is_integer(),
                f"Retry-After is a whole number of seconds >= 0 (RFC 9110), got {retry_after!r}. "
                "Round it, or pass a datetime for the HTTP-date form.",
            )
            value = str(int(seconds))
        reply = cls(429, json=json, headers={**(headers or {}), "Retry-After": value})
        if http_date and not isinstance(retry_after, dt.datetime):
            reply._retry_after_date = float(value)  # the date is read off the clock when the reply is sent
        return reply

    @classmethod
    def connect_error(cls) -> Reply:
        """The connection is refused: `httpx.ConnectError` before anything is sent."""
        return cls._failing(
            lambda request: httpx.ConnectError("[Errno 111] Connection refused", request=request)
        )

    @classmethod
    def connection_reset(cls) -> Reply:
        """The server resets the connection before answering: `httpx.ReadError` (ECONNRESET)."""
        return cls._failing(
            lambda request: httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        )

    @classmethod
    def read_timeout(cls) -> Reply:
        """The server never answers: `httpx.ReadTimeout` once the request's read timeout has passed."""
        return cls(delay=math.inf)

    @classmethod
    def raises(cls, error: Exception | type[Exception]) -> Reply:
        """Raise `error` (an instance, or an httpx error class built with the request) instead of answering."""
        if isinstance(error, type):
            error_class = error
            return cls._failing(lambda request: _build_error(error_class, request))
        _check(isinstance(error, Exception), f"Reply.raises() takes an exception, got {error!r}.")
        return cls._failing(lambda _request: error)

    @classmethod
    def malformed_json(cls, status: int = 200, *, body: bytes = b'{"id": "msg_1", "status": ') -> Reply:
        """A JSON content type over a body that is not JSON: `response.json()` fails."""
        return cls(status, content=body, headers={"Content-Type": "application/json"})

    @classmethod
    def truncated(
        cls, status: int = 200, *, json: Any = _MISSING, content: bytes | None = None, keep: float = 0.5
    ) -> Reply:
        """The body stops part-way (`keep` of it is sent): reading it raises `httpx.RemoteProtocolError`."""
        _check(
            0 <= keep < 1, f"Reply.truncated(keep=...) is the part of the body sent, in [0, 1), got {keep!r}."
        )
        reply = cls(
            status,
            json={"id": "msg_1", "status": "sent"} if json is _MISSING and content is None else json,
            content=content,
        )
        reply._truncate_at = keep
        return reply

    @classmethod
    def computed(cls, answer: Callable[[httpx.Request], Any]) -> Reply:
        """A reply made per request by `answer(request)`, which returns a status, a `Reply` or an `httpx.Response`.

        For an answer that depends on the request (an id per call, an echo of the body).
        `respond()` takes such a callable, or an `httpx.Response`, directly.

        Usage:

        ```python
        sms.send_message.respond(lambda request: Reply(201, json={"id": f"msg_{next(ids)}"}))
        ```
        """
        _check(callable(answer), f"Reply.computed() takes a callable of the request, got {answer!r}.")
        reply = cls()
        reply._compute = answer
        return reply

    def _resolve(self, request: httpx.Request) -> Reply:
        """The reply for `request`: a computed reply's answer to it, any other reply itself."""
        if self._compute is None:
            return self
        return _as_reply(self._compute(request), "The callable given to respond()")._resolve(request)

    @classmethod
    def _failing(cls, error: Callable[[httpx.Request], Exception]) -> Reply:
        reply = cls()
        reply._error = error
        return reply

    # -- answering -----------------------------------------------------------------------------

    def response(self, request: httpx.Request) -> httpx.Response:
        """The httpx response this reply gives to `request` (raises the reply's error, if any)."""
        if self._error is not None:
            raise self._error(request)
        if self._compute is not None:
            return self._resolve(request).response(request)
        headers = self.headers
        if self._retry_after_date is not None:  # read off the harness clock when sent
            at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._retry_after_date)
            headers = {**headers, "Retry-After": email.utils.format_datetime(at, usegmt=True)}
        if self._json is not _MISSING:
            response = httpx.Response(self.status, headers=headers, json=self._json, request=request)
        else:
            response = httpx.Response(
                self.status, headers=headers, text=self._text, content=self._content, request=request
            )
        if self._truncate_at is not None:
            body = response.content
            sent = body[: int(len(body) * self._truncate_at)]
            response = httpx.Response(
                self.status,
                headers={**response.headers, "Content-Length": str(len(body))},
                stream=_TruncatedStream(sent, len(body)),
                request=request,
            )
        if self.delay:
            response.extensions[_DELAY] = self.delay
        return response


def _build_error(error_class: type[Exception], request: httpx.Request) -> Exception:
    """An exception of `error_class`, built the way httpx (or httpx2) builds its own when it can."""
    builder: Callable[..., Exception] = error_class
    for args, kwargs in ((("Mock error",), {"request": request}), (("Mock error",), {}), ((), {})):
        try:
            return builder(*args, **kwargs)
        except TypeError:
            continue
    msg = f"Reply.raises() cannot build {error_class.__name__}; pass an instance instead."
    raise MockApiError(msg)


def _check_retry_after(value: str) -> None:
    if value.isdigit() or _parse_http_date(value) is not None:
        return
    msg = (
        f"Invalid Retry-After header {value!r}: it is whole seconds ('30') or an HTTP date "
        "('Wed, 21 Oct 2015 07:28:00 GMT'). Use Reply.rate_limited(retry_after=...) to build one."
    )
    raise MockApiError(msg)


def _parse_http_date(value: str) -> dt.datetime | None:
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


ReplyLike = int | Reply | httpx.Response | Callable[[httpx.Request], Any]


def _replies(args: Sequence[ReplyLike], kwargs: dict[str, Any], declared: Reply) -> list[Reply]:
    """Replies from respond()'s arguments; a bare status equal to the declared one is the declared reply."""
    if args and not (len(args) == 1 and isinstance(args[0], int) and kwargs):
        if kwargs:
            msg = "Pass either replies (respond(503, Reply(201, json=...))) or one reply's fields (respond(201, json=...)), not both."
            raise MockApiError(msg)
        return [_reply(arg, declared) for arg in args]
    status = cast(int, args[0]) if args else declared.status
    if status != declared.status:
        return [Reply(status, **kwargs)]
    # The declared reply, with the fields given replaced (a new body replaces the declared one).
    fields: dict[str, Any] = {
        "headers": declared.headers,
        "delay": declared.delay,
        "moves_to": declared.moves_to,
    }
    if not {"json", "text", "content"} & kwargs.keys():
        fields.update(json=declared._json, text=declared._text, content=declared._content)
    return [Reply(status, **{**fields, **kwargs})]


def _reply(arg: ReplyLike, declared: Reply) -> Reply:
    if isinstance(arg, int) and not isinstance(arg, bool) and arg == declared.status:
        return declared
    if callable(arg) and not isinstance(arg, Reply):
        return Reply.computed(arg)
    return _as_reply(arg, "A reply")


def _as_reply(value: Any, what: str) -> Reply:
    """A status, a Reply or an httpx.Response as a Reply."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, httpx.Response):
        try:
            content = value.content  # decoded: its Content-Encoding and length no longer apply
        except httpx.ResponseNotRead:
            msg = f"{what} is an httpx.Response whose body was not read: build it with content=, or read() it first."
            raise MockApiError(msg) from None
        dropped = ("content-encoding", "content-length", "transfer-encoding")
        headers = httpx.Headers([(k, v) for k, v in value.headers.multi_items() if k.lower() not in dropped])
        return Reply(value.status_code, headers=headers, content=content or None)
    if isinstance(value, int) and not isinstance(value, bool):
        return Reply(value)
    msg = f"{what} is a status code, a harness.Reply or an httpx.Response, got {value!r}."
    raise MockApiError(msg)


# -- declaring routes ------------------------------------------------------------------------------


class Endpoint:
    """A route declared on a `MockApi` class: method, path template, filters and its usual reply.

    Made by `endpoint()`. On an active mock, the attribute is the route (`sms.send_message`, a
    `MockRoute`); on the class it is this declaration.
    """

    def __init__(
        self,
        method: str,
        path: str,
        reply: Reply,
        *,
        match_params: Mapping[str, str] | None,
        match_json: Any,
        match_headers: Mapping[str, str] | None,
        required: bool,
    ) -> None:
        _check(
            isinstance(cast(object, method), str) and method.upper() in _METHODS,
            f"Unknown HTTP method {method!r}. Use one of {', '.join(sorted(_METHODS))}.",
        )
        _check(
            isinstance(cast(object, path), str) and (path == "" or path.startswith("/")) and "?" not in path,
            f"An endpoint path starts with '/' and has no query string, got {path!r}. "
            "Match query parameters with match_params={...}.",
        )
        self.method = method.upper()
        self.path = path
        self.reply = reply
        self.match_params = dict(match_params) if match_params is not None else None
        self.match_json = match_json
        self.match_headers = dict(match_headers) if match_headers is not None else None
        self.required = required
        self.name = ""
        self.owner = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.owner = name, owner.__name__

    def __repr__(self) -> str:
        return f"<Endpoint {self.owner}.{self.name}: {self.method} {self.path}>"

    def _key(self) -> tuple[Any, ...]:
        return (
            self.method,
            _PARAM.sub("{}", self.path),
            repr(self.match_params),
            repr(self.match_json),
            repr(self.match_headers),
        )

    def __get__(self, instance: MockApi | None, owner: type) -> Any:
        if instance is None:
            return self
        return instance._routes[self.name]


def endpoint(
    method: str,
    path: str = "",
    *,
    status: int = 200,
    json: Any = _MISSING,
    text: str | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    delay: float = 0.0,
    match_params: Mapping[str, str] | None = None,
    match_json: Any = _MISSING,
    match_headers: Mapping[str, str] | None = None,
    required: bool = False,
) -> Any:
    """Declare a route of a `MockApi`: `METHOD path` under the API's base URL, and its usual reply.

    `{name}` in the path matches one path segment and is recorded in `call.path_params`. The
    route answers requests whose query contains `match_params`, whose JSON body equals
    `match_json`, whose headers contain `match_headers`. `required=True` fails a test that never
    calls it; otherwise a declared route may go uncalled until a test configures it.

    Usage:

    ```python
    class SmsApi(MockApi):
        base_url = "https://api.sms.test/v1"
        send_message = endpoint("POST", "/messages", status=201, json={"id": "msg_1"})
    ```
    """
    reply = Reply(status, json=json, text=text, content=content, headers=headers, delay=delay)
    return Endpoint(
        method,
        path,
        reply,
        match_params=match_params,
        match_json=match_json,
        match_headers=match_headers,
        required=required,
    )


def _path_regex(base_path: str, template: str) -> re.Pattern[str]:
    parts = _PARAM.split(template)
    # split() alternates literal text and parameter names
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
    return re.compile(f"^{re.escape(base_path)}{pattern}$")


# -- recorded calls and assertions -----------------------------------------------------------------


class RecordedCall:
    """A request a mock route received, and the response it gave (None when it raised instead)."""

    def __init__(self, call: Call, path_params: dict[str, str]) -> None:
        self.request: httpx.Request = call.request
        self.response: httpx.Response | None = call.optional_response
        self.path_params = path_params
        self.site: str | None = call.request.extensions.get(_SITE)
        """Where the code under test sent the request ('file:line in function'), when known."""

    def __repr__(self) -> str:
        return f"<RecordedCall {self.request.method} {self.request.url}>"

    def describe(self, limit: int = 120) -> str:
        """One line: method, URL, the start of the body, and where it was sent from."""
        body = " ".join(self.text.split())
        body = f" {body[:limit]}{'…' if len(body) > limit else ''}" if body else ""
        return f"{self.method} {self.url}{body}" + (f" (sent at {self.site})" if self.site else "")

    @property
    def method(self) -> str:
        """The request's method."""
        return self.request.method

    @property
    def url(self) -> httpx.URL:
        """The request's URL."""
        return self.request.url

    @property
    def params(self) -> dict[str, str]:
        """The query parameters (the last value of a repeated one)."""
        return dict(self.request.url.params)

    @property
    def headers(self) -> httpx.Headers:
        """The request's headers."""
        return self.request.headers

    @property
    def content(self) -> bytes:
        """The request's body bytes."""
        return self.request.content

    @property
    def text(self) -> str:
        """The request's body as text."""
        return self.request.content.decode(self.request.headers.encoding or "utf-8", "replace")

    @property
    def json(self) -> Any:
        """The request's body parsed as JSON (raises `ValueError` when it is not JSON)."""
        return jsonlib.loads(self.request.content)


_EXPECTABLE = ("json", "content", "text", "params", "headers", "path_params")


def _differences(call: RecordedCall, expected: dict[str, Any]) -> list[str]:
    differences = []
    for name, want in expected.items():
        if name == "json":
            try:
                got: Any = call.json
            except ValueError:
                differences.append(f"json: the body is not JSON: {call.content[:200]!r}")
                continue
        elif name == "headers":
            got = {key: call.headers.get(key) for key in want}
            want = {key: str(value) for key, value in want.items()}
        else:
            got = getattr(call, name)
        if got != want:
            differences.append(_diff(name, want, got))
    return differences


def _diff(name: str, want: Any, got: Any) -> str:
    if isinstance(want, dict) and isinstance(got, dict):
        keys = sorted({*want, *got}, key=str)
        lines = [
            f"  {key!r}: expected {want[key]!r}, got {got[key]!r}"
            if key in want and key in got
            else f"  {key!r}: missing (expected {want[key]!r})"
            if key in want
            else f"  {key!r}: unexpected ({got[key]!r})"
            for key in keys
            if want.get(key, _MISSING) != got.get(key, _MISSING)
        ]
        return f"{name} differs:\n" + "\n".join(lines)
    want_lines = pprint.pformat(want, width=88, sort_dicts=True).splitlines()
    got_lines = pprint.pformat(got, width=88, sort_dicts=True).splitlines()
    if len(want_lines) == 1 and len(got_lines) == 1:
        return f"{name}: expected {want_lines[0]}\n{' ' * len(name)}       got {got_lines[0]}"
    diff = difflib.unified_diff(want_lines, got_lines, "expected", "actual", lineterm="", n=2)
    return f"{name} differs (- expected, + actual):\n" + "\n".join(f"  {line}" for line in diff)


def _check_expected(expected: dict[str, Any]) -> None:
    unknown = sorted(set(expected) - set(_EXPECTABLE))
    if unknown:
        msg = f"Unknown call field {unknown[0]!r}; compare any of {', '.join(_EXPECTABLE)}."
        raise TypeError(msg)


# -- routes of an active mock ----------------------------------------------------------------------


class Calls(list[RecordedCall]):
    """The calls a route (or a mock API) received, oldest first: a list, with `last`."""

    @property
    def last(self) -> RecordedCall:
        """The most recent call (AssertionError when there is none)."""
        if not self:
            msg = "No call was received, so there is no last one."
            raise AssertionError(msg)
        return self[-1]


class MockRoute:
    """A route of a mock API in a test: what it answers, how often it must be called, what it got.

    `respond()` sets the replies (a sequence is given in order and its last reply repeats), per
    scenario state with `when=`. Configuring a route makes it required: the mock fails at exit if it
    was not called (as often as `times()` says), unless `optional()`.
    """

    def __init__(self, api: MockApi, declared: Endpoint, regex: re.Pattern[str]) -> None:
        self.api = api
        self.endpoint = declared
        self.name = f"{type(api).__name__}.{declared.name}"
        self._regex = regex
        self._plans: dict[str | None, list[Reply]] = {None: [declared.reply]}
        self._given: dict[str | None, int] = {}
        self.required = declared.required
        self.expected_times: int | None = None
        self._route: respx.Route | None = None

    def __repr__(self) -> str:
        return f"<MockRoute {self.name}: {self.describe()}>"

    def describe(self) -> str:
        """`METHOD url-template` of this route."""
        return f"{self.endpoint.method} {self.api.base_url}{self.endpoint.path}"

    # -- configuring -----------------------------------------------------------------------------

    def respond(self, *replies: ReplyLike, when: str | None = None, **reply: Any) -> Self:
        """Answer with these replies in order (the last one repeats), or with one reply built from keywords.

        A bare status code is an empty reply with that status, or the declared reply when it is the
        declared status: `respond(503, 503, 201)` fails twice, then answers as declared. An
        `httpx.Response` is answered as it is; a callable of the request makes a reply per call
        (see `Reply.computed`).

        `when="delivered"` sets the replies used while the API's scenario state is "delivered";
        other states keep the route's general replies.

        Usage:

        ```python
        sms.send_message.respond(503, 503, Reply(201, json={"id": "msg_1"}))
        sms.send_message.respond(201, json={"id": "msg_1"}, moves_to="sent")
        sms.get_status.respond(json={"status": "delivered"}, when="sent")
        ```
        """
        self._plans[when] = _replies(replies, reply, self.endpoint.reply)
        self._given.pop(when, None)
        self.required = True
        return self

    def times(self, count: int) -> Self:
        """Expect exactly `count` calls: one more fails at once, fewer fail at the mock's exit."""
        _check(
            _is_number(count, int) and count >= 1,
            f"times() takes a count >= 1, got {count!r}. Use assert_not_called() to expect no call.",
        )
        self.expected_times = count
        self.required = True
        return self

    def once(self) -> Self:
        """Expect exactly one call: `times(1)`."""
        return self.times(1)

    def optional(self) -> Self:
        """Let the test end without calling this route as often as declared (`times()` then only caps the calls)."""
        self.required = False
        return self

    # -- answering (called by respx for each matching request) -----------------------------------

    def __call__(self, request: httpx.Request, **_path_params: str) -> httpx.Response:
        request.extensions[_SITE] = _request_site()
        if self.expected_times is not None and self.call_count >= self.expected_times:
            error = UnmatchedRequestError(
                f"{self.name} was called more often than expected: this is call {self.call_count + 1}, "
                f"and times({self.expected_times}) was declared.\n{_describe_request(request)}\n"
                f"Raise the count with {self.api.fixture_name()}.{self.endpoint.name}.times({self.call_count + 1}), "
                "or find the extra call."
            )
            self.api._failures.append(error)
            raise error
        state = self.api.state if self.api.state in self._plans else None
        plan = self._plans[state]
        given = self._given.get(state, 0)
        reply = plan[min(given, len(plan) - 1)]._resolve(request)  # a computed reply may move the state too
        self._given[state] = given + 1
        if reply.moves_to is not None:
            self.api.state = reply.moves_to
        return reply.response(request)

    # -- what it received --------------------------------------------------------------------------

    @property
    def calls(self) -> Calls:
        """The calls this route answered (or failed on purpose), oldest first; `calls.last` is the latest."""
        if self._route is None:
            return Calls()
        return Calls(RecordedCall(call, self._path_params(call.request)) for call in self._route.calls)

    @property
    def call_count(self) -> int:
        """How many calls this route received."""
        return self._route.call_count if self._route is not None else 0

    @property
    def called(self) -> bool:
        """Whether this route received any call."""
        return self.call_count > 0

    @property
    def last_call(self) -> RecordedCall:
        """The most recent call (AssertionError when there is none)."""
        self.assert_called()
        return self.calls[-1]

    def _path_params(self, request: httpx.Request) -> dict[str, str]:
        found = self._regex.match(request.url.path)
        return found.groupdict() if found else {}

    def assert_called(self) -> None:
        """Fail unless the route was called at least once."""
        __tracebackhide__ = True
        if not self.called:
            msg = f"{self.name} ({self.describe()}) was not called.\n{self.api._calls_summary()}"
            raise AssertionError(msg)

    def assert_not_called(self) -> None:
        """Fail if the route was called."""
        __tracebackhide__ = True
        if self.called:
            listing = "\n".join(f"- {call.describe()}" for call in self.calls)
            msg = f"{self.name} was called {self.call_count} time(s), expected none:\n{listing}"
            raise AssertionError(msg)

    def assert_called_times(self, count: int) -> None:
        """Fail unless the route was called exactly `count` times."""
        __tracebackhide__ = True
        if self.call_count != count:
            listing = "".join(f"\n- {call.describe()}" for call in self.calls)
            msg = f"{self.name} was called {self.call_count} time(s), expected {count}.{listing}"
            raise AssertionError(msg)

    def assert_called_once(self) -> None:
        """Fail unless the route was called exactly once."""
        __tracebackhide__ = True
        self.assert_called_times(1)

    def assert_called_with(self, **expected: Any) -> None:
        """Fail unless the LAST call had these fields: json, content, text, params, headers (a subset), path_params."""
        __tracebackhide__ = True
        _check_expected(expected)
        differences = _differences(self.last_call, expected)
        if differences:
            msg = f"The last call to {self.name} differs from what was expected:\n" + "\n".join(differences)
            raise AssertionError(msg)

    def assert_called_once_with(self, **expected: Any) -> None:
        """Fail unless the route was called exactly once, with these fields (see assert_called_with)."""
        __tracebackhide__ = True
        self.assert_called_once()
        self.assert_called_with(**expected)

    def assert_any_call(self, **expected: Any) -> None:
        """Fail unless some call had these fields (see assert_called_with)."""
        __tracebackhide__ = True
        _check_expected(expected)
        self.assert_called()
        closest = min((_differences(call, expected) for call in self.calls), key=len)
        if closest:
            msg = (
                f"No call to {self.name} had the expected fields ({self.call_count} call(s)); "
                "the closest one differs:\n" + "\n".join(closest)
            )
            raise AssertionError(msg)

    # -- activation ----------------------------------------------------------------------------------

    def _pattern(self) -> Pattern:
        url = httpx.URL(self.api.base_url)
        lookups: dict[str, Any] = {
            "method": self.endpoint.method,
            "scheme": url.scheme,
            "host": url.host,
            "port": url.port or {"http": 80, "https": 443}[url.scheme],
            "path__regex": self._regex.pattern,
        }
        if self.endpoint.match_params is not None:
            lookups["params__contains"] = self.endpoint.match_params
        if self.endpoint.match_json is not _MISSING:
            lookups["json"] = self.endpoint.match_json
        if self.endpoint.match_headers is not None:
            lookups["headers__contains"] = self.endpoint.match_headers
        return M(**lookups)

    def _unfulfilled(self) -> str | None:
        if self.required and self.expected_times is not None and self.call_count < self.expected_times:
            return f"{self.name}: {self.describe()} called {self.call_count} time(s), expected {self.expected_times}"
        if self.required and not self.called:
            return f"{self.name}: {self.describe()} was never called"
        return None


def _describe_request(request: httpx.Request, limit: int = 500) -> str:
    headers = "\n".join(f"    {name}: {value}" for name, value in request.headers.items())
    body = request.content
    shown = body[:limit].decode("utf-8", "replace") + (
        f"... ({len(body)} bytes)" if len(body) > limit else ""
    )
    return f"  {request.method} {request.url}\n  headers:\n{headers}\n  body: {shown or '(empty)'}"


# -- the mock API ----------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class MockApi:
    """A mocked external HTTP service: subclass it with a `base_url` and `endpoint()` routes.

    An instance is inactive until entered (`with`, `async with`, or as a decorator; the plugin's
    `register_api()` makes it a fixture). While active its routes answer httpx and httpx2 requests
    under `base_url`. On exit it fails with `UnmatchedRequestError` if a request found no route (even
    one the code under test caught), and with `RouteNotCalledError` if a required route went
    uncalled; an exception already on its way out wins over both. Set `app` to an ASGI app to let it
    serve the requests no declared route answers (a small fake of the service).

    `state` is the scenario state ("started" at entry) that replies move with `moves_to=` and that
    routes answer by with `respond(..., when=state)`.

    Usage:

    ```python
    class SmsApi(MockApi):
        base_url = "https://api.sms.test/v1"
        send_message = endpoint("POST", "/messages", status=201, json={"id": "msg_1"})

    async with SmsApi() as sms:
        sms.send_message.respond(503, 201)
        ...
        sms.send_message.assert_called_times(2)
    ```
    """

    base_url: ClassVar[str] = ""
    app: ClassVar[Any] = None
    _endpoints: ClassVar[dict[str, Endpoint]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        endpoints: dict[str, Endpoint] = {}
        for klass in reversed(cls.__mro__):
            endpoints.update(
                {name: value for name, value in vars(klass).items() if isinstance(value, Endpoint)}
            )
        cls._endpoints = endpoints
        if not cls.base_url and not endpoints and cls.app is None:
            return  # an abstract base of the user's mocks
        url = httpx.URL(cls.base_url) if isinstance(cast(object, cls.base_url), str) else None
        _check(
            url is not None
            and url.scheme in ("http", "https")
            and bool(url.host)
            and not url.query
            and not url.fragment,
            f"{cls.__name__}.base_url must be an absolute http(s) URL without query, like "
            f"'https://api.example.com/v1', got {cls.base_url!r}.",
        )
        cls.base_url = cls.base_url.rstrip("/")
        seen: dict[tuple[Any, ...], str] = {}
        for name, declared in endpoints.items():
            if (other := seen.get(declared._key())) is not None:
                msg = (
                    f"{cls.__name__}.{name} and {cls.__name__}.{other} both match "
                    f"{declared.method} {declared.path}: the second would never answer. "
                    f"Remove one, or tell them apart with match_params=, match_json= or match_headers=."
                )
                raise MockApiError(msg)
            seen[declared._key()] = name

    def __init__(self) -> None:
        if not type(self).base_url:
            msg = f"{type(self).__name__} has no base_url: subclass MockApi and set base_url = 'https://...'."
            raise MockApiError(msg)
        base_path = httpx.URL(self.base_url).path.rstrip("/")
        self._routes = {
            name: MockRoute(self, declared, _path_regex(base_path, declared.path))
            for name, declared in self._endpoints.items()
        }
        self.state = _INITIAL_STATE
        self._failures: list[UnmatchedRequestError] = []
        self._active = False
        self._app_route: respx.Route | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} {'active' if self._active else 'inactive'}>"

    @classmethod
    def fixture_name(cls) -> str:
        """The name of this API's fixture and decorator argument: `SmsApi` → `sms_api`."""
        return _snake(cls.__name__)

    @property
    def routes(self) -> dict[str, MockRoute]:
        """The routes by attribute name."""
        return dict(self._routes)

    @property
    def calls(self) -> Calls:
        """Every call any route of this API received, oldest first; `calls.last` is the latest."""
        calls = [
            (call, route)
            for route in self._routes.values()
            for call in (route._route.calls if route._route else [])
        ]
        order = {id(call): index for index, call in enumerate(_ROUTER.calls)}
        calls.sort(key=lambda pair: order.get(id(pair[0]), 0))
        return Calls(RecordedCall(call, route._path_params(call.request)) for call, route in calls)

    @property
    def unmatched(self) -> list[UnmatchedRequestError]:
        """Requests no route answered (and extra calls past `times()`), reported again at exit.

        Clear it (`api.unmatched.clear()`) after a test asserted on such an error on purpose.
        """
        return self._failures

    def _calls_summary(self) -> str:
        calls = self.calls
        if not calls:
            return f"{type(self).__name__} received no request."
        listing = "\n".join(f"- {call.describe()}" for call in calls)
        return f"{type(self).__name__} received:\n{listing}"

    # -- activation --------------------------------------------------------------------------------

    def start(self) -> Self:
        """Activate the mock: its routes answer from now on."""
        if self._active:
            msg = f"{self!r} is already active; enter each mock once (or make another instance)."
            raise MockApiError(msg)
        self.state = _INITIAL_STATE
        self._failures.clear()
        for route in self._routes.values():
            route._given.clear()  # sequences start over with the calls
        _ROUTER.activate(self)
        self._active = True
        return self

    def stop(self, *, check: bool = True) -> None:
        """Deactivate the mock; with `check`, fail on unmatched requests and required routes left uncalled."""
        __tracebackhide__ = True
        if not self._active:
            return
        self._active = False
        _ROUTER.deactivate(self)
        if check:
            self._check_expectations()

    def _check_expectations(self) -> None:
        __tracebackhide__ = True
        if failures := self._failures:
            first = str(failures[0])
            more = (
                f"\n\n({len(failures) - 1} more unmatched request(s) after this one.)"
                if len(failures) > 1
                else ""
            )
            msg = (
                f"{type(self).__name__}: {len(failures)} request(s) got no mock reply during the test "
                f"(if the test passed, the code under test caught the error).\n\n{first}{more}\n\n"
                f"If the test expected it, clear the record after asserting: {self.fixture_name()}.unmatched.clear()."
            )
            raise UnmatchedRequestError(msg)
        unfulfilled = [problem for route in self._routes.values() if (problem := route._unfulfilled())]
        if unfulfilled:
            listing = "\n".join(f"- {problem}" for problem in unfulfilled)
            msg = (
                f"These routes of {type(self).__name__} were expected but not called as declared:\n{listing}\n\n"
                "If a route may go uncalled, mark it: api.<route>.optional() in the test, "
                "or leave it unconfigured (declared routes are optional until a test configures them)."
            )
            raise RouteNotCalledError(msg)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        self.stop(check=exc_type is None)

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        self.stop(check=exc_type is None)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function to run it with a fresh instance of this mock active.

        A parameter named after the API (`sms_api` for `SmsApi`) receives the instance.
        """
        name = self.fixture_name()
        signature = inspect.signature(func)
        wants_api = name in signature.parameters
        hidden = signature.replace(parameters=[p for p in signature.parameters.values() if p.name != name])

        def bind(api: MockApi, kwargs: dict[str, Any]) -> dict[str, Any]:
            return {**kwargs, name: api} if wants_api else kwargs

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with type(self)() as api:
                    return await func(*args, **bind(api, kwargs))

            run_async.__signature__ = hidden  # type: ignore[attr-defined]
            return cast("Callable[P, R]", run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with type(self)() as api:
                return func(*args, **bind(api, kwargs))

        run.__signature__ = hidden  # type: ignore[attr-defined]
        return cast("Callable[P, R]", run)


# -- the one respx router of all active mocks -----------------------------------------------------

try:
    import httpcore2  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - httpx2 is optional
    httpcore2 = None


def _to_httpcore2(error: httpx.TransportError) -> Exception:
    return cast("type[Exception]", getattr(httpcore2, type(error).__name__, httpcore2.NetworkError))(
        str(error)
    )


class _Httpcore2Stream:
    """An httpx response body handed to httpx2, with httpx's transport errors turned into httpcore2's."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.stream
        except httpx.TransportError as error:
            raise _to_httpcore2(error) from error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.stream:
                yield chunk
        except httpx.TransportError as error:
            raise _to_httpcore2(error) from error


if httpcore2 is not None:

    class _Httpcore2Mocker(HTTPCoreMocker):
        """respx's httpcore mocker pointed at httpx2's fork of httpcore, so mocks answer httpx2 clients."""

        name = "harness-httpcore2"
        targets: ClassVar[list[str]] = [
            "httpcore2._sync.connection.HTTPConnection",
            "httpcore2._sync.connection_pool.ConnectionPool",
            "httpcore2._sync.http_proxy.HTTPProxy",
            "httpcore2._async.connection.AsyncHTTPConnection",
            "httpcore2._async.connection_pool.AsyncConnectionPool",
            "httpcore2._async.http_proxy.AsyncHTTPProxy",
        ]

        @classmethod
        def from_sync_httpx_response(cls, httpx_response: httpx.Response, target: Any, **kwargs: Any) -> Any:
            return httpcore2.Response(
                status=httpx_response.status_code,
                headers=httpx_response.headers.raw,
                content=_Httpcore2Stream(httpx_response.stream),
                extensions=httpx_response.extensions,
            )

        @classmethod
        def _send_sync_request(cls, httpx_request: httpx.Request, **kwargs: Any) -> Any:
            try:
                return super()._send_sync_request(httpx_request, **kwargs)  # type: ignore[no-untyped-call]
            except httpx.TransportError as error:
                raise _to_httpcore2(error) from error

        @classmethod
        async def _send_async_request(cls, httpx_request: httpx.Request, **kwargs: Any) -> Any:
            try:
                return await super()._send_async_request(httpx_request, **kwargs)  # type: ignore[no-untyped-call]
            except httpx.TransportError as error:
                raise _to_httpcore2(error) from error

    _MOCKERS: tuple[type[Mocker], ...] = (HTTPCoreMocker, _Httpcore2Mocker)
else:  # pragma: no cover
    _MOCKERS = (HTTPCoreMocker,)


def _unchained(error: UnmatchedRequestError) -> UnmatchedRequestError:
    # respx hands our error back through its SideEffectError; the chain only hides the message.
    error.__cause__, error.__suppress_context__ = None, True
    return error


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    read = timeout.get("read")
    return float(read) if read is not None else None


def _late(request: httpx.Request, delay: float) -> tuple[float, httpx.ReadTimeout | None]:
    """How long a late reply keeps the client waiting, and the timeout it ends in, if it does."""
    timeout = _read_timeout(request)
    if timeout is None and math.isinf(delay):
        msg = (
            "The mock never answers (Reply.read_timeout()) and this request has no read timeout, "
            "so a real client would hang here. Give the client a timeout (httpx.Timeout(...))."
        )
        return 0.0, httpx.ReadTimeout(msg, request=request)
    if timeout is not None and delay > timeout:
        msg = f"The mock answers after {delay:g}s, past the request's read timeout of {timeout:g}s."
        return timeout, httpx.ReadTimeout(msg, request=request)
    return delay, None


_SYNC_REQUEST = contextvars.ContextVar("harness_sync_request", default=False)


class _AsgiFake(respx.ASGIHandler):
    """respx's ASGI handler, which serves async clients only: a sync request gets a clear error."""

    def __init__(self, api: MockApi) -> None:
        super().__init__(api.app)
        self.api_name = type(api).__name__

    def __call__(self, request: httpx.Request) -> Any:
        if _SYNC_REQUEST.get():
            msg = (
                f"{self.api_name} is served by an ASGI app, which answers async clients only; "
                f"{request.method} {request.url} came from a sync client. Use httpx.AsyncClient, "
                f"or declare the route with endpoint()."
            )
            raise MockApiError(msg)
        return super().__call__(request)


class _DeclaredRoute(respx.Route):
    """A respx route answered by a MockRoute, called directly (respx inspects a side effect's
    signature on every call, which cost a fifth of a mocked request)."""

    def __init__(self, pattern: Pattern, answer: MockRoute) -> None:
        super().__init__(pattern)
        self._answer = answer

    def resolve(self, request: httpx.Request, **path_params: Any) -> httpx.Response:
        try:
            return self._answer(request, **path_params)
        except Exception as error:
            raise SideEffectError(self, origin=error) from error  # respx records the call, then re-raises


class _Router(respx.MockRouter):
    """respx's router, registered with httpx's and httpx2's mockers while any MockApi is active."""

    def __init__(self) -> None:
        super().__init__(assert_all_called=False, assert_all_mocked=True, using=None)
        self.apis: list[MockApi] = []

    def activate(self, api: MockApi) -> None:
        added: list[str] = []
        try:
            for route in api._routes.values():
                respx_route = _DeclaredRoute(route._pattern(), route)
                other = next((existing for existing in self.routes if existing == respx_route), None)
                if other is not None:
                    msg = (
                        f"{route.name} ({route.describe()}) is declared twice: {other.name} of another "
                        "active mock matches the same requests. Activate one of the two mocks at a time."
                    )
                    raise MockApiError(msg)
                name = f"{route.name}@{id(api):x}"
                route._route = self.routes.add(respx_route, name=name)
                added.append(name)
            if api.app is not None:
                url = httpx.URL(api.base_url)
                name = f"{type(api).__name__}.app@{id(api):x}"
                api._app_route = self.routes.add(
                    respx.Route(
                        scheme=url.scheme, host=url.host, path__startswith=url.path.rstrip("/") or "/"
                    ),
                    name=name,
                )
                api._app_route.side_effect = _AsgiFake(api)
                added.append(name)
        except BaseException:
            for name in added:
                self.routes.pop(name)  # type: ignore[no-untyped-call]
            raise
        self.apis.append(api)
        if len(self.apis) == 1:
            for mocker in _MOCKERS:
                mocker.register(self)
                mocker.start()

    def deactivate(self, api: MockApi) -> None:
        for name in [
            route.name for route in self.routes if route.name and route.name.endswith(f"@{id(api):x}")
        ]:
            self.routes.pop(name)  # type: ignore[no-untyped-call]
        self.apis.remove(api)
        if not self.apis:
            for mocker in _MOCKERS:
                mocker.unregister(self)
                mocker.stop()
            self.calls.clear()

    # respx calls these for every request while the router is registered

    def handler(self, request: httpx.Request) -> httpx.Response:
        token = _SYNC_REQUEST.set(True)
        try:
            response = super().handler(request)
        except UnmatchedRequestError as error:
            raise _unchained(error) from None
        except respx.models.AllMockedAssertionError:
            raise self._unmatched(request) from None
        finally:
            _SYNC_REQUEST.reset(token)
        if (delay := response.extensions.get(_DELAY)) is not None:
            wait, timed_out = _late(request, delay)
            if timed_out is None or clock.running_clocks():  # no clock: a timeout is no reason to wait
                clock.wait_sync(wait)
            if timed_out is not None:
                raise timed_out
        return response

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().async_handler(request)
        except UnmatchedRequestError as error:
            raise _unchained(error) from None
        except respx.models.AllMockedAssertionError:
            raise self._unmatched(request) from None
        if (delay := response.extensions.get(_DELAY)) is not None:
            wait, timed_out = _late(request, delay)
            if timed_out is None or clock.running_clocks():  # no clock: a timeout is no reason to wait
                await clock.wait(wait)
            if timed_out is not None:
                raise timed_out
        return response

    def _unmatched(self, request: httpx.Request) -> Exception:
        host = request.url.host
        owner = next((api for api in reversed(self.apis) if httpx.URL(api.base_url).host == host), None)
        # Another respx router (a plain respx.mock) may still answer: leave the request to respx.
        shared = any(self in mocker.routers and len(mocker.routers) > 1 for mocker in _MOCKERS)
        if is_loopback_host(host) and owner is None and not shared:
            return PassThrough(
                "loopback is not an external API", request=request, origin=cast("respx.Route", None)
            )
        error = UnmatchedRequestError(_unmatched_message(request, self.apis))
        if not shared:
            (owner or self.apis[-1])._failures.append(error)
        return error


_ROUTER = _Router()


# -- explaining an unmatched request ---------------------------------------------------------------


def _route_differences(route: MockRoute, request: httpx.Request) -> tuple[int, list[str]]:
    base = httpx.URL(route.api.base_url)
    score, differences = 0, []
    if (request.url.scheme, request.url.host, request.url.port) != (base.scheme, base.host, base.port):
        score += 8
        differences.append(
            f"host {request.url.scheme}://{request.url.netloc.decode()} is not {base.scheme}://{base.netloc.decode()}"
        )
    if not route._regex.match(request.url.path):
        score += 4
        differences.append(
            f"path {request.url.path!r} does not match {base.path.rstrip('/') + route.endpoint.path!r}"
        )
    if request.method != route.endpoint.method:
        score += 2
        differences.append(f"method {request.method} is not {route.endpoint.method}")
    filters = {
        "query": ("params__contains", route.endpoint.match_params),
        "JSON body": ("json", route.endpoint.match_json),
        "headers": ("headers__contains", route.endpoint.match_headers),
    }
    for label, (lookup, value) in filters.items():
        if value is None or value is _MISSING:
            continue
        try:
            matched = bool(M(**{lookup: value}).match(request))
        except ValueError:  # a body that is not JSON
            matched = False
        if not matched:
            score += 1
            differences.append(f"{label} does not match {value!r}")
    return score, differences


def _suggested_name(method: str, path: str) -> str:
    words = [re.sub(r"\W+", "_", part) for part in path.split("/") if part and not part.isdigit()]
    return "_".join([method.lower(), *words[-2:]]).strip("_") or method.lower()


def _unmatched_message(request: httpx.Request, apis: Sequence[MockApi]) -> str:
    candidates = sorted(
        (
            (score, differences, route)
            for api in apis
            for route in api._routes.values()
            for score, differences in [_route_differences(route, request)]
        ),
        key=lambda item: item[0],
    )
    lines = ["No mock route answers this request:", _describe_request(request), ""]
    if candidates:
        lines.append("Nearest routes:")
        for _score, differences, route in candidates[:_NEAREST]:
            lines.append(f"- {route.name} ({route.describe()}): {'; '.join(differences)}")
        lines.append("")
    host_api = next(
        (
            api
            for api in reversed(apis)
            if httpx.URL(api.base_url).host == request.url.host
            and request.url.path.startswith(httpx.URL(api.base_url).path.rstrip("/") + "/")
        ),
        None,
    )
    body = "json={}" if "json" in request.headers.get("content-type", "") else "text=''"
    if host_api is not None:
        base_path = httpx.URL(host_api.base_url).path.rstrip("/")
        path = (
            request.url.path[len(base_path) :] if request.url.path.startswith(base_path) else request.url.path
        )
        lines += [
            f"To answer it, declare the route in {type(host_api).__name__}:",
            f'    {_suggested_name(request.method, path)} = harness.endpoint("{request.method}", "{path}", {body})',
        ]
    else:
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        class_name = (
            "".join(
                part.capitalize()
                for part in re.split(r"\W+", request.url.host)
                if part and part not in ("www", "com", "api")
            )
            + "Api"
        )
        lines += [
            "To answer it, declare a mock of that service:",
            f"    class {class_name}(harness.MockApi):",
            f'        base_url = "{origin}"',
            f'        {_suggested_name(request.method, request.url.path)} = harness.endpoint("{request.method}", "{request.url.path}", {body})',
        ]
    return "\n".join(lines)
