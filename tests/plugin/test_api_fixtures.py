"""register_api fixtures and the app_client fixture, through pytester on the run's backend."""

from __future__ import annotations

import pytest

API_CONFTEST = """
    from harness import MockApi, endpoint, register_api

    @register_api
    class SmsApi(MockApi):
        base_url = "https://api.sms.test/v1"
        send_message = endpoint("POST", "/messages", status=201, json={"id": "msg_1"})

    class BillingApi(MockApi):
        base_url = "https://billing.test"
        invoices = endpoint("GET", "/invoices", json=[])

    register_api(BillingApi, "billing")
"""


def test_registered_apis_become_fixtures_that_check_at_teardown(harness_pytester: pytest.Pytester) -> None:
    """sms_api and billing are active mocks; an uncalled expectation fails the test's teardown."""
    harness_pytester.makeconftest(API_CONFTEST)
    harness_pytester.makepyfile(
        """
        import httpx

        async def test_answered(sms_api, billing):
            async with httpx.AsyncClient() as client:
                sent = await client.post("https://api.sms.test/v1/messages", json={"to": "+1"})
                invoices = await client.get("https://billing.test/invoices")
            assert (sent.json(), invoices.json()) == ({"id": "msg_1"}, [])
            sms_api.send_message.assert_called_once_with(json={"to": "+1"})

        def test_expected_but_not_called(sms_api):
            sms_api.send_message.respond(201)
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "E   harness.exceptions.RouteNotCalledError: These routes of SmsApi were expected but not called as declared:",
            "    - SmsApi.send_message: POST https://api.sms.test/v1/messages was never called",
        ]
    )


def test_an_unmatched_request_swallowed_by_the_code_fails_the_test(harness_pytester: pytest.Pytester) -> None:
    """The fixture's teardown reports the request the code under test caught."""
    harness_pytester.makeconftest(API_CONFTEST)
    harness_pytester.makepyfile(
        """
        import httpx

        async def test_careless_retry(sms_api):
            async with httpx.AsyncClient() as client:
                try:
                    await client.post("https://api.sms.test/v1/mesages", json={})
                except Exception:
                    pass
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "E   harness.exceptions.UnmatchedRequestError: SmsApi: 1 request(s) got no mock reply during the test*",
            "    No mock route answers this request:",
            "      POST https://api.sms.test/v1/mesages",
            "*",
            "    - SmsApi.send_message (POST https://api.sms.test/v1/messages): "
            "path '/v1/mesages' does not match '/v1/messages'",
        ]
    )


def test_register_api_refuses_what_is_not_a_mock_api() -> None:
    """A clear TypeError instead of a fixture that fails later."""
    from harness import register_api

    with pytest.raises(
        TypeError, match=r"register_api\(\) takes a harness.MockApi subclass, got <class 'int'>."
    ):
        register_api(int)  # type: ignore[type-var]


APP_CONFTEST = """
    import contextlib
    from typing import Annotated

    import pytest
    from fastapi import Depends, FastAPI
    from sqlalchemy import String, select
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(String(60))

    SessionLocal = async_sessionmaker()
    EVENTS = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        EVENTS.append("startup")
        yield
        EVENTS.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    async def get_db():
        async with SessionLocal() as session:
            yield session

    @app.post("/notes", status_code=201)
    async def add(text: str, db: Annotated[AsyncSession, Depends(get_db)]):
        db.add(Note(text=text))
        await db.commit()
        return {"ok": True}

    @app.get("/boom")
    async def boom():
        raise RuntimeError("boom")

    @pytest.fixture(scope="session")
    def harness_schema():
        return Base.metadata

    @pytest.fixture
    def harness_app():
        return app

    @pytest.fixture
    def harness_app_bind():
        return [SessionLocal]
"""


def test_app_client_writes_into_the_tests_rollback_scope(harness_pytester: pytest.Pytester) -> None:
    """What the API commits is visible to db_session, gone in the next test; the lifespan runs per test."""
    harness_pytester.makeconftest(APP_CONFTEST)
    harness_pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import func, select
        from conftest import EVENTS, Note, app

        async def test_write(app_client, db_session):
            assert (await app_client.post("/notes", params={"text": "hi"})).status_code == 201
            assert await db_session.scalar(select(Note.text)) == "hi"
            assert EVENTS[-1] == "startup"

        async def test_gone(db_session):
            assert await db_session.scalar(select(func.count()).select_from(Note)) == 0
            assert EVENTS == ["startup", "shutdown"]
            assert app.dependency_overrides == {}

        async def test_500(harness_app):
            from harness import app_client
            async with app_client(harness_app, raise_app_exceptions=False) as client:
                assert (await client.get("/boom")).status_code == 500
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_app_client_without_an_app_says_how_to_give_one(harness_pytester: pytest.Pytester) -> None:
    """The default harness_app fixture explains itself."""
    harness_pytester.makepyfile(
        """
        async def test_client(app_client):
            pass
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "E *UsageError: app_client needs the app under test: define a `harness_app` fixture in "
            "conftest.py that returns it (e.g. `return create_app()`).",
        ]
    )


def test_a_failing_test_is_reported_once_not_again_by_the_mock(harness_pytester: pytest.Pytester) -> None:
    """The test's own failure wins: no teardown error for the route it did not reach."""
    harness_pytester.makeconftest(API_CONFTEST)
    harness_pytester.makepyfile(
        """
        def test_fails_first(sms_api):
            sms_api.send_message.respond(201)
            assert 1 == 2
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1, errors=0)
