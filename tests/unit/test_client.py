"""The app client: lifespan, session binding, restored app state, error switches and helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from harness import AppClient, AppError, AppResponse, LifespanError, app_client, auth_headers
from tests.models import Campaign

EVENTS: list[str] = []


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    EVENTS.append("startup")
    yield {"greeting": "hello"}
    EVENTS.append("shutdown")


app = FastAPI(lifespan=lifespan)
SessionLocal: async_sessionmaker[AsyncSession] = async_sessionmaker(expire_on_commit=False)


async def get_db() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


@app.get("/greeting")
async def greeting(request: Request) -> dict[str, Any]:
    return {"greeting": request.state.greeting, "authorization": request.headers.get("authorization")}


@app.post("/campaigns", status_code=201)
async def create(name: str, db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, int]:
    campaign = Campaign(name=name)
    db.add(campaign)
    await db.commit()
    return {"id": campaign.id}


@app.post("/upload")
async def upload(file: UploadFile, request: Request) -> dict[str, Any]:
    form = await request.form()
    return {
        "filename": file.filename,
        "type": file.content_type,
        "size": len(await file.read()),
        "campaign": form.get("campaign"),
    }


@app.get("/boom")
async def boom() -> None:
    msg = "boom"
    raise RuntimeError(msg)


@app.get("/long", response_class=PlainTextResponse)
async def long() -> str:
    return "ab " * 200


@app.get("/logo")
async def logo() -> Response:
    return Response(b"\x89PNG" + bytes(2000), media_type="image/png")


@pytest.fixture(autouse=True)
def _fresh_events() -> None:
    EVENTS.clear()


async def test_the_lifespan_runs_around_the_client_and_its_state_reaches_requests() -> None:
    """Start-up on entry, shut-down on exit; `yield {...}` state is request.state."""
    async with app_client(app) as client:
        assert EVENTS == ["startup"]
        answer = await client.get("/greeting", headers=auth_headers("token-1"))
    assert EVENTS == ["startup", "shutdown"]
    assert answer.json() == {"greeting": "hello", "authorization": "Bearer token-1"}


async def test_the_lifespan_shuts_down_when_the_test_fails() -> None:
    """An exception inside the block still runs the shut-down."""
    with pytest.raises(ZeroDivisionError):
        async with app_client(app):
            _ = 1 / 0
    assert EVENTS == ["startup", "shutdown"]


async def test_what_the_api_commits_is_in_the_tests_scope(db_session: AsyncSession) -> None:
    """The bound sessionmaker writes into the test's rollback scope through the app's own get_db."""
    async with app_client(app, session=db_session, bind=[SessionLocal]) as client:
        created = await client.post("/campaigns", params={"name": "Spring"})
        assert SessionLocal.kw.get("bind") is not None  # bound while the client is open
    assert (
        await db_session.scalar(select(Campaign.name).where(Campaign.id == created.json()["id"])) == "Spring"
    )
    assert SessionLocal.kw.get("bind") is None
    assert app.dependency_overrides == {}


async def test_binding_a_dependency_is_refused_with_what_to_bind_instead(db_session: AsyncSession) -> None:
    """A dependency in bind= would be replaced, dropping its commit after yield: refused."""
    with pytest.raises(TypeError, match=r"^harness no longer replaces dependencies such as get_db: "):
        app_client(app, session=db_session, bind=[get_db])


async def test_dependency_overrides_and_app_state_are_restored() -> None:
    """What a test sets on the app is undone when the client closes."""
    app.state.feature = "before"
    try:
        async with app_client(app):
            app.dependency_overrides[get_db] = lambda: None
            app.state.feature = "during"
            app.state.extra = 1
        assert app.dependency_overrides == {}
        assert app.state.feature == "before"
        assert not hasattr(app.state, "extra")
    finally:
        del app.state.feature


async def test_a_responses_repr_shows_the_start_of_its_body() -> None:
    """A failing status assertion shows why: the 422's detail, a long body cut, a streamed one left unread."""
    async with app_client(app) as client:
        invalid = await client.post("/campaigns")
        long = await client.get("/long")
        async with client.stream("GET", "/long") as streamed:
            unread = repr(streamed)
    assert isinstance(invalid, AppResponse)
    assert repr(invalid) == (
        f"<Response [422 {invalid.reason_phrase}] "
        '{"detail":[{"type":"missing","loc":["query","name"],"msg":"Field required","input":null}]}>'
    )
    assert repr(long) == f"<Response [200 OK] {'ab ' * 99}ab…>"
    assert unread == "<Response [200 OK]>"


async def test_a_responses_repr_leaves_it_as_it_was() -> None:
    """A binary body is summed up, not printed; the repr does not fix the encoding a test sets later."""
    async with app_client(app) as client:
        image = await client.get("/logo")
        text = await client.get("/long")
    assert repr(image) == "<Response [200 OK] (2004 bytes of image/png)>"
    repr(text)
    text.encoding = "latin-1"
    assert text.text.startswith("ab ab")


async def test_raise_app_exceptions_false_gives_the_500_a_server_would() -> None:
    """By default the app's error reaches the test; switched off, the test sees a 500."""
    async with app_client(app) as client:
        with pytest.raises(RuntimeError, match="boom"):
            await client.get("/boom")
    async with app_client(app, raise_app_exceptions=False) as client:
        assert (await client.get("/boom")).status_code == 500


async def test_upload_posts_a_file_as_multipart(tmp_path: Path) -> None:
    """Bytes, text or a path, the content type guessed from the name, with form fields."""
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("phone,name\n+15550000001,Ann\n")
    async with app_client(app) as client:
        from_text = await client.upload("/upload", "a,b\n", filename="contacts.csv", data={"campaign": "7"})
        from_path = await client.upload("/upload", csv_file)
    assert from_text.json() == {"filename": "contacts.csv", "type": "text/csv", "size": 4, "campaign": "7"}
    assert from_path.json()["size"] == csv_file.stat().st_size


def test_auth_headers_make_bearer_and_basic_headers() -> None:
    """A token is Bearer by default; a username and password are basic auth."""
    assert auth_headers("t") == {"Authorization": "Bearer t"}
    assert auth_headers("t", scheme="Token") == {"Authorization": "Token t"}
    assert auth_headers(username="admin", password="secret") == {"Authorization": "Basic YWRtaW46c2VjcmV0"}
    with pytest.raises(TypeError, match="a token, or username= and password=, not both and not neither"):
        auth_headers()


async def test_an_app_without_lifespan_support_is_served_without_it() -> None:
    """ASGI: an app that raises on the lifespan scope does not support it, and that is fine."""

    async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            msg = "only http"
            raise RuntimeError(msg)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with app_client(plain) as client:
        assert (await client.get("/")).status_code == 204
    with pytest.raises(
        LifespanError, match=r"The app's lifespan startup failed: RuntimeError\('only http'\)"
    ):
        async with app_client(plain, lifespan=True):
            pass


async def test_a_failing_start_up_is_a_lifespan_error_chained_to_the_apps() -> None:
    """The app's exception is the cause, and nothing is left running."""

    @contextlib.asynccontextmanager
    async def broken(_app: FastAPI) -> AsyncIterator[None]:
        msg = "database is down"
        raise ConnectionError(msg)
        yield

    with pytest.raises(LifespanError) as excinfo:
        async with app_client(FastAPI(lifespan=broken)):
            pass
    assert excinfo.value.args == ("The app's lifespan startup failed: ConnectionError('database is down').",)
    assert isinstance(excinfo.value.__cause__, ConnectionError)


async def test_a_start_up_that_never_finishes_fails_instead_of_hanging() -> None:
    """lifespan_timeout bounds the start-up."""

    @contextlib.asynccontextmanager
    async def stuck(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.Event().wait()
        yield

    with pytest.raises(LifespanError) as excinfo:
        async with app_client(FastAPI(lifespan=stuck), lifespan_timeout=0.05):
            pass
    assert excinfo.value.args == (
        "The app's lifespan startup did not finish within 0.05s. Find what it waits for, "
        "or raise the limit: app_client(app, lifespan_timeout=...).",
    )


def _wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return []


def _factory() -> FastAPI:
    return app


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        (FastAPI, "app_client() needs an ASGI app instance, got the class FastAPI. Pass FastAPI(...)."),
        (
            _wsgi,
            f"{_wsgi!r} looks like a WSGI app (environ, start_response). app_client() serves ASGI apps; "
            "use httpx.Client(transport=httpx.WSGITransport(app=...)) for WSGI.",
        ),
        (
            _factory,
            f"{_factory!r} takes no arguments: is it an app factory? Pass the app it returns: app_client(_factory()).",
        ),
        (42, "app_client() needs an ASGI app (an async callable taking scope, receive, send), got 42."),
    ],
    ids=["class", "wsgi", "factory", "not-callable"],  # the messages hold addresses: xdist workers differ
)
def test_what_is_not_an_asgi_app_is_refused_with_what_to_pass(candidate: Any, message: str) -> None:
    """A class, a WSGI app, an uncalled factory or anything else: one clear message each."""
    with pytest.raises(AppError) as excinfo:
        AppClient(candidate)
    assert excinfo.value.args == (message,)


def test_binding_without_a_session_says_so() -> None:
    """bind= needs the session it binds to."""
    with pytest.raises(TypeError, match=r"app_client\(bind=...\) needs session=<the test's AsyncSession>"):
        app_client(app, bind=[get_db])


async def test_an_app_sending_the_wrong_lifespan_message_is_refused() -> None:
    """A start-up answered with another message type names it."""

    async def confused(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    with pytest.raises(LifespanError) as excinfo:
        async with app_client(confused):
            pass
    assert excinfo.value.args == (
        "The app sent 'lifespan.shutdown.complete' during lifespan startup; expected lifespan.startup.complete.",
    )


def test_an_async_callable_with_the_wrong_arity_is_refused() -> None:
    """ASGI 3 takes (scope, receive, send)."""

    async def two(scope: dict[str, Any], receive: Any) -> None:
        return None

    with pytest.raises(AppError) as excinfo:
        AppClient(two)
    assert excinfo.value.args == (
        f"app_client() needs an ASGI 3 app taking (scope, receive, send); {two!r} takes 2 argument(s).",
    )


async def test_bind_takes_engines_and_sessionmakers_only(db_session: AsyncSession) -> None:
    """Anything else in bind= is named."""
    with pytest.raises(TypeError) as excinfo:
        app_client(app, session=db_session, bind=[42])
    assert excinfo.value.args == (
        "app_client(bind=...) takes the app's AsyncEngines (or 'module:attribute' paths to them) and "
        "async_sessionmakers, got 42.",
    )
