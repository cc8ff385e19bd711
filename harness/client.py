"""An httpx client for the app under test, over ASGI, with its lifespan and database wired to the test.

    with adopt_engines("app.db:engine", test_engine=engine):
        async with rollback_scope(engine) as session, app_client(app) as client:
            response = await client.post("/api/campaigns", json={...}, headers=auth_headers("token"))

`app_client` runs the app's lifespan (start-up on entry, shut-down on exit, even when the test
fails) and restores `app.dependency_overrides` and `app.state` on exit. The app's database is the
test's when harness adopted the app's engines (`adopt_engines`, or ``bind=[engine]`` here, which
adopts them for the client's lifetime) or bound its sessionmakers (``bind=[SessionLocal]``): what
the API writes is visible to the test and gone after it. Its requests go straight to the app
through `httpx.ASGITransport`: they never touch the network, and mock APIs never see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import mimetypes
import os
import pathlib
from base64 import b64encode
from collections.abc import Iterable, Mapping, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from harness.db.adoption import DEPENDENCY_REFUSED, adopt_engines, bind_sessions, scope_engine
from harness.db.engines import is_write
from harness.exceptions import AppError, HarnessError, LifespanError
from harness.queries import capture_queries

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AppClient", "AppLifespan", "AppResponse", "app_client", "auth_headers"]

_LIFESPAN_TIMEOUT = 30.0


def auth_headers(
    token: str | None = None,
    *,
    scheme: str = "Bearer",
    username: str | None = None,
    password: str | None = None,
) -> dict[str, str]:
    """An `Authorization` header: a bearer token, or HTTP basic auth from a username and password.

    Usage:

        await client.get("/api/me", headers=auth_headers("test-token"))
        await client.get("/admin", headers=auth_headers(username="admin", password="secret"))
    """
    if (token is None) == (username is None):
        msg = "auth_headers() takes a token, or username= and password=, not both and not neither."
        raise TypeError(msg)
    if token is not None:
        return {"Authorization": f"{scheme} {token}"}
    credentials = b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
    return {"Authorization": f"Basic {credentials}"}


def _check_asgi(app: Any) -> None:
    if isinstance(app, type):
        msg = f"app_client() needs an ASGI app instance, got the class {app.__qualname__}. Pass {app.__qualname__}(...)."
        raise AppError(msg)
    call = getattr(app, "__call__", None)  # noqa: B004 - the object, not just callable()
    if call is None:
        msg = f"app_client() needs an ASGI app (an async callable taking scope, receive, send), got {app!r}."
        raise AppError(msg)
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call):
        parameters = inspect.signature(app).parameters
        if len(parameters) == 3 or any(p.kind is p.VAR_POSITIONAL for p in parameters.values()):
            return
        msg = f"app_client() needs an ASGI 3 app taking (scope, receive, send); {app!r} takes {len(parameters)} argument(s)."
        raise AppError(msg)
    parameters = inspect.signature(app).parameters
    if len(parameters) == 2:
        msg = (
            f"{app!r} looks like a WSGI app (environ, start_response). app_client() serves ASGI apps; "
            "use httpx.Client(transport=httpx.WSGITransport(app=...)) for WSGI."
        )
    elif not parameters:
        msg = f"{app!r} takes no arguments: is it an app factory? Pass the app it returns: app_client({getattr(app, '__name__', 'factory')}())."
    else:
        msg = f"app_client() needs an ASGI app (an async callable taking scope, receive, send), got {app!r}."
    raise AppError(msg)


class AppLifespan:
    """An ASGI app's lifespan: start-up on entry, shut-down on exit; one app client or several.

    `app_client` runs one of these for itself. Made by hand and passed as
    ``app_client(app, lifespan=running)``, one start-up serves several clients: the pytest plugin
    does that for the tests that share an event loop (``harness_app_lifespan = shared``).
    ``state`` is what the start-up yielded (copied into each request); ``supported`` is False for an
    app that refused the lifespan protocol (then nothing runs, unless ``required``).

    Usage:

        async with AppLifespan(app) as lifespan:
            for name in ("January", "February"):
                async with app_client(app, lifespan=lifespan) as client:
                    await client.post("/api/campaigns", json={"name": name})
    """

    def __init__(self, app: Any, *, timeout: float = _LIFESPAN_TIMEOUT, required: bool = False) -> None:
        _check_asgi(app)
        self.app, self.timeout, self.required = app, timeout, required
        self.state: dict[str, Any] = {}
        self.supported = True
        self._receive: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._send: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        await self.app(scope, self._receive.get, self._send.put)

    async def _wait_for(self, stage: str) -> None:
        assert self._task is not None
        message_wait = asyncio.ensure_future(self._send.get())
        try:
            done, _ = await asyncio.wait(
                {message_wait, self._task}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not message_wait.done():
                message_wait.cancel()
        if message_wait in done:
            message = message_wait.result()
            if message["type"] == f"lifespan.{stage}.complete":
                return
            if message["type"] == f"lifespan.{stage}.failed":
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(self._task, 1.0)  # Starlette re-raises the error after "failed"
                cause = self._task.exception() if self._task.done() and not self._task.cancelled() else None
                msg = (
                    f"The app's lifespan {stage} failed: {_describe(cause)}"
                    if cause
                    else f"The app's lifespan {stage} failed: {message.get('message') or 'no message'}."
                )
                raise LifespanError(msg) from cause
            msg = f"The app sent {message['type']!r} during lifespan {stage}; expected lifespan.{stage}.complete."
            raise LifespanError(msg)
        if self._task in done:
            error = self._task.exception()
            if stage == "startup" and not self.required:
                self.supported = False  # ASGI: an app that raises on the lifespan scope does not support it
                return
            msg = (
                f"The app's lifespan {stage} failed: {_describe(error)}"
                if error
                else f"The app's lifespan ended during {stage}."
            )
            raise LifespanError(msg) from error
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        msg = (
            f"The app's lifespan {stage} did not finish within {self.timeout:g}s. Find what it waits for, "
            "or raise the limit: app_client(app, lifespan_timeout=...)."
        )
        raise LifespanError(msg)

    async def __aenter__(self) -> Self:
        await self.startup()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    async def startup(self, *, read_only: AsyncSession | None = None) -> None:
        """Run the start-up. With ``read_only``, a start-up that writes to that session's database fails.

        A lifespan shared by several tests starts inside the first test's transaction, so rows it
        writes would be gone for the others: that is refused rather than left to surprise them.
        """
        if self._task is not None:
            msg = "This lifespan has already started. Make a new AppLifespan(app) to run it again."
            raise LifespanError(msg)
        self._task = asyncio.ensure_future(self._run())
        await self._receive.put({"type": "lifespan.startup"})
        if read_only is None:
            await self._wait_for("startup")
            return
        with capture_queries(read_only) as log:
            await self._wait_for("startup")
        if writes := [query.sql for query in log.queries if is_write(query.sql)]:
            await self.shutdown()
            msg = (
                f"The app's lifespan wrote to the database at start-up ({' '.join(writes[0].split())[:100]!r}"
                f"{f' and {len(writes) - 1} more' if len(writes) > 1 else ''}). A lifespan shared by the tests of "
                "an event loop starts inside the first test's transaction, so what it writes would be gone for "
                "the others. Run the lifespan per test (harness_app_lifespan = test), or write that data once "
                "with the schema (harness_schema)."
            )
            raise LifespanError(msg)

    async def shutdown(self) -> None:
        """Run the shut-down (nothing if the start-up did not run or the app has no lifespan)."""
        if not self.supported or self._task is None or self._task.done():
            return
        await self._receive.put({"type": "lifespan.shutdown"})
        await self._wait_for("shutdown")
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._task, self.timeout)


def _describe(error: BaseException) -> str:
    # harness's own errors are paragraphs with the fix: shown whole, not squeezed into a repr.
    if isinstance(error, HarnessError):
        return f"{type(error).__name__}: {error}"
    return f"{error!r}."


def _state_dict(app: Any) -> MutableMapping[str, Any] | None:
    state = getattr(app, "state", None)
    inner = getattr(state, "_state", None)  # Starlette's State keeps its attributes here
    if isinstance(inner, dict):
        return inner
    return state if isinstance(state, MutableMapping) else None


def _restore(mapping: MutableMapping[str, Any], saved: dict[str, Any]) -> None:
    mapping.clear()
    mapping.update(saved)


_BODY_SHOWN = 300  # characters of a response's body in its repr
_TEXT_TYPES = ("text/", "json", "xml", "x-www-form-urlencoded", "javascript")


class AppResponse(httpx.Response):
    """An `httpx.Response` whose repr carries the start of its body.

    A failing ``assert response.status_code == 201`` then shows why the app answered 422 (its
    validation detail), where httpx's repr says only ``<Response [422 Unprocessable Entity]>``.
    """

    def __repr__(self) -> str:
        head = super().__repr__().removesuffix(">")
        if not hasattr(self, "_content"):  # a streamed body not read yet: nothing to show
            return f"{head}>"
        content_type = self.headers.get("content-type", "")
        if self._content and content_type and not any(kind in content_type for kind in _TEXT_TYPES):
            return f"{head} ({len(self._content)} bytes of {content_type.split(';')[0]})>"
        # Decoded here, not through .text: that would fix the encoding a test may still set.
        head_bytes = self._content[: _BODY_SHOWN * 4]
        try:
            start = head_bytes.decode(self.charset_encoding or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            start = head_bytes.decode("utf-8", errors="replace")
        text = " ".join(start.split())
        if len(text) > _BODY_SHOWN or len(self._content) > _BODY_SHOWN * 4:
            text = text[:_BODY_SHOWN].rstrip() + "…"
        return f"{head} {text}>" if text else f"{head}>"


class AppClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` for an ASGI app, entered with `async with` (made by `app_client()`).

    On entry it adopts the app's engines and binds its sessionmakers listed in ``bind`` to the test
    database of ``session``'s scope, remembers `app.dependency_overrides` and `app.state`, and runs
    the lifespan start-up; on exit it runs the shut-down (even when the test failed) and restores
    all of it.
    """

    def __init__(
        self,
        app: Any,
        *,
        session: AsyncSession | None = None,
        bind: Iterable[Any] = (),
        lifespan: bool | AppLifespan | None = None,
        lifespan_timeout: float = _LIFESPAN_TIMEOUT,
        raise_app_exceptions: bool = True,
        base_url: str = "http://testserver",
        share_session: bool = False,
        **client_options: Any,
    ) -> None:
        _check_asgi(app)
        bind = list(bind)
        if bind and session is None:
            msg = "app_client(bind=...) needs session=<the test's AsyncSession> (db_session) to bind them to."
            raise TypeError(msg)
        self.app = app
        self._session = session
        self._share_session = share_session
        if share_session and not any(isinstance(item, async_sessionmaker) for item in bind):
            msg = "app_client(share_session=True) shares the session through sessionmakers: list them in bind=[...]."
            raise TypeError(msg)
        self._sessionmakers = [item for item in bind if isinstance(item, async_sessionmaker)]
        self._engines = [item for item in bind if isinstance(item, AsyncEngine | str)]
        others = [item for item in bind if not isinstance(item, async_sessionmaker | AsyncEngine | str)]
        if dependencies := [item for item in others if callable(item)]:
            names = ", ".join(getattr(d, "__qualname__", repr(d)) for d in dependencies)
            raise TypeError(DEPENDENCY_REFUSED.format(names=names))
        if others:
            msg = f"app_client(bind=...) takes the app's AsyncEngines (or 'module:attribute' paths to them) and async_sessionmakers, got {others[0]!r}."
            raise TypeError(msg)
        self._owns_lifespan = not isinstance(lifespan, AppLifespan)
        self._lifespan = (
            lifespan
            if isinstance(lifespan, AppLifespan)
            else AppLifespan(app, timeout=lifespan_timeout, required=lifespan is True)
            if lifespan is not False
            else None
        )
        self._exit_stack = contextlib.ExitStack()
        transport = httpx.ASGITransport(
            app=self._with_lifespan_state, raise_app_exceptions=raise_app_exceptions
        )
        super().__init__(transport=transport, base_url=base_url, **client_options)

    async def _with_lifespan_state(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if self._lifespan is not None and self._lifespan.state:
            scope = {**scope, "state": dict(self._lifespan.state)}  # a copy per request, as servers do
        await self.app(scope, receive, send)

    async def __aenter__(self) -> Self:
        stack = self._exit_stack
        if self._session is not None and self._engines:
            stack.enter_context(adopt_engines(*self._engines, test_engine=scope_engine(self._session)))
        if self._session is not None and self._sessionmakers:
            stack.enter_context(bind_sessions(self._session, *self._sessionmakers, share=self._share_session))
        overrides = getattr(self.app, "dependency_overrides", None)
        if isinstance(overrides, dict):
            saved_overrides = dict(overrides)
            stack.callback(_restore, overrides, saved_overrides)
        if (state := _state_dict(self.app)) is not None:
            saved_state = dict(state)
            stack.callback(_restore, state, saved_state)
        try:
            if self._lifespan is not None and self._owns_lifespan:
                await self._lifespan.startup()
            await super().__aenter__()
        except BaseException:
            stack.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
            if self._lifespan is not None and self._owns_lifespan:
                try:
                    await self._lifespan.shutdown()
                except LifespanError as error:
                    if exc is None:
                        raise
                    exc.add_note(f"(and then: {error})")
        finally:
            self._exit_stack.close()

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send ``request`` to the app; the response is an `AppResponse` (its repr shows its body)."""
        response = await super().send(request, **kwargs)
        response.__class__ = AppResponse
        return response

    async def upload(
        self,
        url: str,
        content: bytes | str | os.PathLike[str],
        *,
        filename: str | None = None,
        field: str = "file",
        content_type: str | None = None,
        data: Mapping[str, Any] | None = None,
        **request_options: Any,
    ) -> httpx.Response:
        """POST one file as `multipart/form-data` (plus form fields in `data`).

        `content` is bytes, text, or a path to read; the content type is guessed from the file name.

        Usage:

            await client.upload("/api/contacts/import", csv_text, filename="contacts.csv", data={"campaign_id": 1})
        """
        if isinstance(content, os.PathLike):
            filename = filename or os.path.basename(os.fspath(content))
            body = await asyncio.to_thread(pathlib.Path(content).read_bytes)
        else:
            body = content.encode() if isinstance(content, str) else content
        filename = filename or "upload.bin"
        content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        files = {field: (filename, body, content_type)}
        return await self.post(url, files=files, data=dict(data or {}), **request_options)


def app_client(
    app: Any,
    *,
    session: AsyncSession | None = None,
    bind: Iterable[Any] = (),
    lifespan: bool | AppLifespan | None = None,
    lifespan_timeout: float = _LIFESPAN_TIMEOUT,
    raise_app_exceptions: bool = True,
    base_url: str = "http://testserver",
    share_session: bool = False,
    **client_options: Any,
) -> AppClient:
    """An `AppClient` for an ASGI app (FastAPI, Starlette, Litestar), to enter with `async with`.

    `bind` lists the app's engines (`AsyncEngine` objects or ``"module:attribute"`` paths) to adopt
    and `async_sessionmaker`s to bind for the client's lifetime, onto the test database of
    `session`'s scope (see `harness.adopt_engines`); dependencies are refused, since replacing one
    drops what it does after ``yield``. `lifespan` None runs it if the app supports it, True
    requires it, False skips it; an `AppLifespan` that is already running is shared instead (its
    state reaches the requests, and this client neither starts nor stops it). `share_session=True`
    makes the sessionmakers in `bind` hand the app `session` itself (see `bind_sessions`). `raise_app_exceptions=False` turns an unhandled app error into the 500
    response a server would send, for tests of error handling.

    Usage:

        async with app_client(app, session=db_session, bind=["app.db:engine"]) as client:
            response = await client.get("/api/campaigns/1")
    """
    return AppClient(
        app,
        session=session,
        bind=bind,
        lifespan=lifespan,
        lifespan_timeout=lifespan_timeout,
        raise_app_exceptions=raise_app_exceptions,
        base_url=base_url,
        share_session=share_session,
        **client_options,
    )
