"""The clock fixture and the clock marker, run through pytester."""

from __future__ import annotations

import pytest


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:xdist", *args)


def test_the_marker_freezes_time_without_asking_for_the_fixture(harness_pytester: pytest.Pytester) -> None:
    harness_pytester.makepyfile(
        """
        import datetime as dt
        from zoneinfo import ZoneInfo

        import pytest

        ET = ZoneInfo("America/New_York")

        @pytest.fixture
        def opened_at():  # fixtures run under the marker's clock too
            return dt.datetime.now(ET)

        @pytest.mark.clock("2024-01-15 20:00 America/New_York")
        def test_marker_alone(opened_at):
            assert opened_at == dt.datetime(2024, 1, 15, 20, tzinfo=ET)

        @pytest.mark.clock("2024-01-15 20:00", tz="America/New_York")
        async def test_marker_and_fixture(clock):
            await clock.advance(hours=13)
            assert dt.datetime.now(ET) == dt.datetime(2024, 1, 16, 9, tzinfo=ET)

        @pytest.mark.clock("2024-07-04")
        class TestHoliday:
            def test_one(self):
                assert dt.date.today() == dt.date(2024, 7, 4)

            @pytest.mark.clock("2024-12-25")
            def test_closest_marker_wins(self):
                assert dt.date.today() == dt.date(2024, 12, 25)

        def test_fixture_alone_freezes_at_the_start(clock):
            first = dt.datetime.now(dt.UTC)
            assert dt.datetime.now(dt.UTC) == first == clock.now()
            assert first.year >= 2026

        def test_no_clock_no_freeze():
            assert dt.datetime.now(dt.UTC) != dt.datetime.now(dt.UTC)
        """
    )
    run(harness_pytester).assert_outcomes(passed=6)


@pytest.mark.parametrize(("ini", "expected"), [("", "freezegun"), ("time-machine", "time-machine")])
def test_the_ini_key_picks_the_backend(harness_pytester: pytest.Pytester, ini: str, expected: str) -> None:
    harness_pytester.makepyfile(
        f"""
        import pytest

        def test_default(clock):
            assert clock.backend == {expected!r}

        @pytest.mark.clock(backend="freezegun")
        def test_marker_wins(clock):
            assert clock.backend == "freezegun"
        """
    )
    run(harness_pytester, "-o", f"harness_clock_backend={ini}").assert_outcomes(passed=2)


def test_bad_marker_arguments_fail_the_test_with_the_reason(harness_pytester: pytest.Pytester) -> None:
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.clock("2024-01-15", zone="America/New_York")
        def test_unknown_keyword():
            pass

        @pytest.mark.clock("next tuesday-ish")
        def test_unreadable():
            pass
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ClockError: Bad @pytest.mark.clock arguments: *unexpected keyword argument 'zone'. "
            "It takes freeze_time()'s: (when, *, tz, tz_offset, tick, backend).",
            "*ClockError: Cannot read 'next tuesday-ish' as a time*",
        ]
    )


def test_the_marker_is_registered(harness_pytester: pytest.Pytester) -> None:
    result = harness_pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.clock(when=None, *, tz=None, tz_offset=0, tick=False, backend=None):*"]
    )


def test_the_database_is_built_before_time_freezes(harness_pytester: pytest.Pytester) -> None:
    """A clock-marked first test that uses the database: the driver is not imported under freezegun."""
    harness_pytester.makepyfile(
        """
        import datetime as dt
        import pytest
        from sqlalchemy import text

        @pytest.mark.clock("2024-01-15 10:00")
        async def test_first_of_the_run(db_session):  # the marker alone puts the clock first
            assert dt.datetime.now() == dt.datetime(2024, 1, 15, 10)
            assert (await db_session.execute(text("SELECT 1"))).scalar() == 1
        """
    )
    run(harness_pytester).assert_outcomes(passed=1)


def test_pytest_durations_keep_real_time_under_the_clock(harness_pytester: pytest.Pytester) -> None:
    """--durations measures a clock-marked test in real seconds, not from 2024 to now."""
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.clock("2024-01-15 10:00")
        def test_frozen():
            pass
        """
    )
    result = run(harness_pytester, "--durations=0", "-vv")
    result.assert_outcomes(passed=1)
    durations = [
        float(line.split("s ", 1)[0]) for line in result.stdout.lines if line.endswith("::test_frozen")
    ]
    assert durations
    assert max(durations) < 60


def test_a_clock_marked_first_test_that_reaches_the_database_through_the_app(
    harness_pytester: pytest.Pytester,
) -> None:
    """The driver is imported at start-up, so only the app's sessions touching it under the clock work."""
    harness_pytester.makeconftest(
        """
        import pytest
        from fastapi import Depends, FastAPI
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import async_sessionmaker

        SessionLocal = async_sessionmaker()
        app = FastAPI()

        async def get_db():
            async with SessionLocal() as session:
                yield session

        @app.get("/one")
        async def one(db=Depends(get_db)):
            return {"one": (await db.execute(text("SELECT 1"))).scalar()}

        @pytest.fixture
        def harness_app():
            return app

        @pytest.fixture
        def harness_app_bind():
            return [SessionLocal]
        """
    )
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.clock("2024-01-15 10:00")
        async def test_first(app_client):
            assert (await app_client.get("/one")).json() == {"one": 1}
        """
    )
    run(harness_pytester).assert_outcomes(passed=1)
