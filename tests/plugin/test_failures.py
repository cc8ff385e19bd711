"""What a user sees when a run goes wrong through harness: the output lines are the contract."""

from __future__ import annotations

import inspect
import json
import os
import signal
import textwrap
from pathlib import Path

import pytest

from harness import DatabaseUnavailableError
from harness.postgres import ThrowawayPostgres, find_bindir
from tests.plugin.test_fixtures import MODELS


def harness_notes(result: pytest.RunResult) -> list[str]:
    """The `harness: ...` notes added to failures, as printed on the report's E lines."""
    return [
        line.removeprefix("E").strip()
        for line in result.stdout.lines
        if line.startswith("E") and line.removeprefix("E").strip().startswith("harness: ")
    ]


def test_loop_scope_mismatch_is_a_start_up_error(harness_pytester: pytest.Pytester) -> None:
    """A test in a session loop with db fixtures in function loops fails before running, with the fix."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio(loop_scope="session")
        async def test_in_session_loop(db_session):
            pass
        """
    )
    result = harness_pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: test_loop_scope_mismatch_is_a_start_up_error.py::test_in_session_loop runs in a 'session'-scoped "
            "event loop, but harness's db_session runs in the 'function'-scoped loop of async fixtures, "
            "and a database connection cannot move between event loops.",
            'Give fixtures and tests the same loop: set asyncio_default_fixture_loop_scope = "session" (and '
            'asyncio_default_test_loop_scope = "session") in your pytest configuration, or remove loop_scope from '
            "the test's asyncio marker.",
        ],
        consecutive=True,
    )


def test_a_failure_on_another_loops_object_names_the_fixtures_in_other_loops(
    harness_pytester: pytest.Pytester,
) -> None:
    """A session-loop fixture's object awaited in a test's function loop: the raw asyncio error gets a
    note naming that fixture and where it is, and the fix."""
    harness_pytester.makeconftest(
        textwrap.dedent(MODELS)
        + """
import asyncio
import pytest_asyncio

@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def opened():
    yield asyncio.get_running_loop().create_future()  # stands for a connection or client
"""
    )
    harness_pytester.makepyfile(
        """
        async def test_uses_it(opened, db_session):
            await opened
        """
    )
    result = harness_pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    conftest = (harness_pytester.path / "conftest.py").read_text().splitlines()
    assert harness_notes(result) == [
        "harness: test_uses_it runs in a 'function'-scoped event loop, and async fixtures it uses run in other "
        f"loops: opened (in a 'session'-scoped loop, conftest.py:{conftest.index('async def opened():')}). What a fixture "
        "opens in its loop (a connection, a session, a client, a lock) cannot be awaited in another. Give those "
        'fixtures the test\'s loop (@pytest_asyncio.fixture(loop_scope="function")), or run fixtures and tests in '
        'one loop: asyncio_default_fixture_loop_scope = "session" and asyncio_default_test_loop_scope = "session".'
    ]


def cluster(datadir: str) -> list[int]:
    """The PostgreSQL server's processes: the postmaster and its children."""
    from pathlib import Path

    postmaster = int((Path(datadir) / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[-1].split()[1] == str(postmaster):
                children.append(int(stat.parent.name))
        except OSError:  # a process that ended meanwhile
            pass
    return [postmaster, *children]


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie that nobody reaped has, too)."""
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


SERVER_FAULTS = f"""
import os
import signal
import time

import pytest
from sqlalchemy import text

@pytest.fixture(scope="session")
def harness_engine_options():
    return {{"statement_timeout": 0.5}}  # the client's command timeout is 5 s more

{inspect.getsource(cluster)}
{inspect.getsource(gone)}

async def test_before(db_session):
    assert await db_session.scalar(text("SELECT 1")) == 1

async def test_fault(db_session, db_engine):
    await db_session.scalar(text("SELECT 1"))
    if os.environ["FAULT"] == "dies":
        postmaster = cluster(os.environ["FAULT_PGDATA"])[0]
        os.kill(postmaster, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        # The server goes down a moment later; until then the backend may still answer SELECT 2.
        while not gone(postmaster):
            time.sleep(0.01)
        await db_session.scalar(text("SELECT 2"))
    else:
        # A connection of its own: asyncpg's cancel request once hung both paths; the session's too.
        async with db_engine.connect() as connection:
            await connection.scalar(text("SELECT 1"))
            for pid in cluster(os.environ["FAULT_PGDATA"]):
                os.kill(pid, signal.SIGSTOP)
            await connection.scalar(text("SELECT 2"))

@pytest.mark.parametrize("n", range(20))
async def test_later(db_session, n):
    await db_session.scalar(text("SELECT 1"))
"""


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
@pytest.mark.parametrize("fault", ["dies", "freezes"])
def test_a_server_that_dies_or_freezes_stops_the_run_with_one_message(
    harness_pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    on_postgres: bool,
    fault: str,
    driver: str,
) -> None:
    """No hang and no wall of identical errors: the test that meets the fault fails, then the run
    stops. psycopg has no command timeout of its own: harness's stops the frozen statement."""
    if on_postgres:
        pytest.skip("starts a server of its own: runs in the SQLite session")
    try:
        find_bindir()
    except DatabaseUnavailableError:
        pytest.skip("no PostgreSQL server binaries on this machine")
    server = ThrowawayPostgres(state=tmp_path / "state.json", say=lambda line: None)
    url = server.start()
    datadir = server._state()["datadir"]  # type: ignore[index]
    try:
        harness_pytester.makepyfile(test_faults=SERVER_FAULTS)
        monkeypatch.setenv("FAULT", fault)
        monkeypatch.setenv("FAULT_PGDATA", datadir)
        result = harness_pytester.runpytest_subprocess(
            "-p",
            "no:randomly",
            f"--harness-database-url={url.rsplit('/', 1)[0].replace('postgresql:', f'postgresql+{driver}:')}/faults",
            timeout=120,
        )
    finally:
        if fault == "freezes":
            for pid in cluster(datadir):
                os.kill(pid, signal.SIGCONT)
        server.stop()
    result.assert_outcomes(passed=1, failed=1)
    stop = [line for line in result.stdout.lines if "Interrupted: harness:" in line]
    assert len(stop) == 1, result.stdout.str()
    assert (
        "harness: the database server stopped answering during test_faults.py::test_fault, so the run stops "
        in stop[0]
    )
    if fault == "dies":
        assert "Cannot connect to the PostgreSQL server at 127.0.0.1:" in stop[0]
    else:
        assert "no answer within 3 s" in stop[0]
        assert "harness: PostgreSQL did not answer within the client's command timeout" in result.stdout.str()


def test_db_engine_alone_serves_tests_in_any_loop(harness_pytester: pytest.Pytester) -> None:
    """The engine's pooled connections end with their loop, so tests that take only db_engine may
    run in session and function loops in turn (asyncpg's connections are bound to a loop)."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import text

        async def one(db_engine):
            async with db_engine.connect() as connection:
                return (await connection.execute(text("SELECT 1"))).scalar_one()

        @pytest.mark.asyncio(loop_scope="session")
        async def test_session_loop(db_engine):
            assert await one(db_engine) == 1

        async def test_function_loop(db_engine):
            assert await one(db_engine) == 1

        @pytest.mark.asyncio(loop_scope="session")
        async def test_session_loop_again(db_engine):
            assert await one(db_engine) == 1
        """
    )
    result = harness_pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_unreachable_server_stops_the_run_with_instructions(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No silent skip: a run that asks for PostgreSQL and cannot reach it exits with what to do."""
    monkeypatch.setenv("HARNESS_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/app")
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile("async def test_uses_db(db_session): pass")
    result = harness_pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        [
            "*! _pytest.outcomes.Exit: harness could not set up the test database: Cannot connect to the PostgreSQL "
            "server at 127.0.0.1:1 (*). Is the server running and is the URL right? *",
        ]
    )
    result.assert_outcomes()


def test_unreachable_server_under_xdist_fails_each_test_with_the_reason(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In xdist workers the reason reaches the report (pytest.exit there would be an INTERNALERROR)."""
    monkeypatch.setenv("HARNESS_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/app")
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile("async def test_uses_db(db_session): pass")
    result = harness_pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*harness could not set up the test database: Cannot connect to the PostgreSQL server*"]
    )
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_remote_server_stops_the_run(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-loopback database server is refused unless the ini opts in."""
    monkeypatch.setenv("HARNESS_DATABASE_URL", "postgresql://postgres@db.example.com/app")
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile("async def test_uses_db(db_session): pass")
    result = harness_pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        ["*harness could not set up the test database: Refusing to use database server 'db.example.com': *"]
    )


def test_swallowed_isolation_error_fails_the_test_at_teardown(harness_pytester: pytest.Pytester) -> None:
    """Code that catches harness's error still fails the test, at teardown, naming the cause."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        from sqlalchemy import text
        from conftest import Note, count_notes

        async def test_commits_for_real(db_session):
            db_session.add(Note(text="escape"))
            await db_session.flush()
            try:
                await db_session.execute(text("COMMIT"))
            except Exception:
                pass  # a careless retry loop

        async def test_next_test_starts_clean(db_session):
            assert await count_notes(db_session) == 0
        """
    )
    result = harness_pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_commits_for_real*",
            "E*harness.exceptions.IsolationError: Raw SQL 'COMMIT' at *test_swallowed_isolation_error_fails_the_test_at_teardown.py:8"
            " in test_commits_for_real would end the test's outer transaction and make its writes permanent.*",
        ]
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


def test_a_violation_the_test_failed_with_is_reported_once(harness_pytester: pytest.Pytester) -> None:
    """A stopped COMMIT fails the test; the scope raising it again at teardown adds no second report."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        from sqlalchemy import text

        async def test_commits(db_session):
            await db_session.execute(text("COMMIT"))

        async def test_outer_commit(db_session):
            await (await db_session.connection()).commit()
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(failed=2)  # and no errors at teardown
    result.stdout.no_fnmatch_line("*ERROR at teardown*")


def test_a_clock_left_running_is_stopped_and_fails_its_test(harness_pytester: pytest.Pytester) -> None:
    """A freeze started and never stopped fails the test that left it; the next test runs at the real time."""
    harness_pytester.makepyfile(
        """
        import datetime as dt
        import pytest
        import harness

        def test_leaves_a_clock_running():
            harness.freeze_time("2020-01-01").start()
            assert dt.date.today().year == 2020

        def test_runs_at_the_real_time():
            assert dt.date.today().year > 2024

        @pytest.fixture
        def breaks_at_teardown():
            yield
            raise RuntimeError("teardown broke")

        def test_leaks_one_with_a_failing_fixture(breaks_at_teardown):
            harness.freeze_time("2020-01-01").start()

        def test_runs_at_the_real_time_after_that_too():
            assert dt.date.today().year > 2024

        def test_leaks_one_inside_the_clock_fixture(clock):
            harness.freeze_time("2020-01-01").start()

        def test_and_after_that():
            assert dt.date.today().year > 2024
        """
    )
    result = run(harness_pytester, "--harness-summary=summary.json")
    result.assert_outcomes(passed=6, errors=3)
    message = (
        "was still running when the test ended; harness stopped it, so that the tests after this one run at the "
        "real time. Stop it in the test: `with harness.freeze_time(...)`, the clock fixture or @pytest.mark.clock "
        "do it for you, or call clock.stop()."
    )
    result.stdout.fnmatch_lines(
        [
            "E   harness.exceptions.ClockError: A clock started at test_a_clock_left_running_is_stopped_and_fails_its_test"
            f".py:6 in test_leaves_a_clock_running {message}",
            "E*RuntimeError: teardown broke",
            "E*harness: A clock started at *.py:18 in test_leaks_one_with_a_failing_fixture " + message,
            "E   harness.exceptions.ClockError: A clock started at *.py:24 in test_leaks_one_inside_the_clock_fixture "
            + message,
        ]
    )
    assert "Clocks stop in the reverse order" not in result.stdout.str()
    summary = json.loads((harness_pytester.path / "summary.json").read_text())["test_execution_summary"]
    assert summary["finished_at"] > "2025"
    assert summary["duration_seconds"] >= 0


def test_a_plain_def_test_asking_for_async_fixtures_is_refused(harness_pytester: pytest.Pytester) -> None:
    """A def test cannot await db_session's methods: it fails at setup, saying to declare it async."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        from hypothesis import HealthCheck, given, settings, strategies
        from sqlalchemy import text

        def test_sync(db_session):
            pass

        async def test_async(db_session):
            pass

        def test_reads_the_engines_url(db_engine):  # sync use of an async fixture: allowed
            assert db_engine.url.database

        @settings(max_examples=2, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(strategies.integers())
        async def test_property(db_session, number):  # async under hypothesis' sync wrapper
            assert await db_session.scalar(text("SELECT 1")) == 1
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_sync is a plain def but asks for db_session (an AsyncSession), whose methods must be awaited: "
            "declare it `async def test_sync(...)`."
        ]
    )


def test_an_async_test_nothing_would_run_gets_the_configuration(harness_pytester: pytest.Pytester) -> None:
    """pytest-asyncio's strict mode runs only marked async tests; pytest would tell the user to install
    an async plugin. harness names the setting instead, and marked or anyio tests are left alone."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import pytest

        async def test_unmarked(db_session):
            pass

        @pytest.mark.asyncio
        async def test_marked(db_session):
            pass

        async def test_without_harness():  # not harness's to judge: pytest's own message
            pass
        """
    )
    result = run(harness_pytester, "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=1, errors=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_unmarked is an async def test that nothing would run: pytest-asyncio is in its strict mode*",
            "Let pytest-asyncio run every async test, as harness's quick start does, in your pytest configuration:",
            "    asyncio_mode = auto",
        ]
    )


def test_an_anyio_test_with_harness_fixtures_is_told_to_run_on_pytest_asyncio(
    harness_pytester: pytest.Pytester,
) -> None:
    """FastAPI's docs teach @pytest.mark.anyio; with harness's session such a test got a raw 'Future
    attached to a different loop'. It fails at setup with the fix; anyio tests without harness run."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        async def test_marked_anyio(db_session):
            pass

        async def test_asking_for_the_backend(anyio_backend, app_client):
            pass

        @pytest.mark.anyio
        async def test_anyio_without_harness():
            pass
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_marked_anyio runs under anyio's pytest plugin (@pytest.mark.anyio or anyio_backend), on a loop of "
            "anyio's, and harness's db_session and app_client live on pytest-asyncio's*remove the anyio mark*",
        ]
    )


def test_without_pytest_asyncio_harness_says_what_its_fixtures_need(
    harness_pytester: pytest.Pytester,
) -> None:
    """-p no:asyncio (an anyio-only project) ended in INTERNALERROR: unknown configuration value."""
    harness_pytester.makeini("[pytest]\nfilterwarnings = error\nharness_database_name = no_asyncio\n")
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.anyio
        async def test_with_harness(db_session):
            pass

        @pytest.mark.anyio
        async def test_without(anyio_backend):
            pass
        """
    )
    result = harness_pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:randomly", "-p", "no:xdist")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "test_with_harness?asyncio? asks for harness's db_session or app_client, which run on pytest-asyncio's event loop, and pytest-asyncio is not loaded*"
        ]
    )


def test_a_lazy_load_names_the_attribute_and_the_fixes(harness_pytester: pytest.Pytester) -> None:
    """MissingGreenlet from a lazy relationship gets a note with the attribute and the ways to load it."""
    harness_pytester.makeconftest(
        """
        import pytest
        from sqlalchemy import ForeignKey
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

        class Base(DeclarativeBase):
            pass

        class Team(Base):
            __tablename__ = "teams"
            id: Mapped[int] = mapped_column(primary_key=True)
            members: Mapped[list["Member"]] = relationship()

        class Member(Base):
            __tablename__ = "members"
            id: Mapped[int] = mapped_column(primary_key=True)
            team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))

        @pytest.fixture(scope="session")
        def harness_schema():
            return Base.metadata
        """
    )
    harness_pytester.makepyfile(
        """
        from conftest import Team

        async def test_lazy(db_session):
            db_session.add(Team(id=1))
            await db_session.commit()
            db_session.expunge_all()
            team = await db_session.get(Team, 1)
            assert team.members == []
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(failed=1)
    assert (
        "harness: Team.members was loaded lazily, which needs I/O that an attribute access cannot await under "
        "SQLAlchemy asyncio. Load it with the query (select(...).options(selectinload(Team.members))), refresh it "
        'first (await session.refresh(obj, ["members"])), or await it (await obj.awaitable_attrs.members). An object '
        "whose attributes were expired by a commit reloads them the same way: expire_on_commit=False keeps them "
        "(the default of harness's sessions)."
    ) in harness_notes(result)


def test_clock_hints_come_with_the_failure(harness_pytester: pytest.Pytester) -> None:
    """A tick past due timers, a naive datetime against the frozen aware one, a timeout: each gets its note."""
    harness_pytester.makepyfile(
        """
        import asyncio
        import datetime as dt
        import pytest
        import harness

        @pytest.mark.clock("2024-01-15 10:00")
        async def test_tick_does_not_fire_timers(clock):
            fired = asyncio.Event()
            asyncio.get_running_loop().call_later(30, fired.set)
            clock.tick(60)
            assert fired.is_set()

        @pytest.mark.clock("2024-01-15 10:00")
        def test_naive_against_aware(clock):
            assert dt.datetime.now() < clock.now()

        @pytest.mark.clock("2024-01-15 10:00")
        async def test_timeout(clock):
            await asyncio.wait_for(asyncio.sleep(1), 0.01)

        async def test_ticks_in_a_with_block():
            fired = asyncio.Event()
            asyncio.get_running_loop().call_later(30, fired.set)
            with harness.freeze_time("2024-01-15 10:00") as clock:
                for _ in range(3):
                    clock.tick(60)
                assert fired.is_set()
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(failed=4)
    assert (
        "harness: clock.tick(60) at test_clock_hints_come_with_the_failure.py:10 in test_tick_does_not_fire_timers moved the wall clock past 1 timer(s) "
        "of the event loop without firing them (asyncio.sleep, call_later): `await clock.advance(60)` moves the "
        "loop's clock too and fires them."
    ) in harness_notes(result)
    assert (
        "harness: time was frozen, and datetime.now() and datetime.utcnow() without a zone give naive datetimes "
        "while the clock (and datetime.now(tz)) give aware ones. Compare like with like: datetime.now(UTC) or "
        "clock.now()."
    ) in harness_notes(result)
    assert (
        "harness: time was frozen, but asyncio's clock runs in real time: if this timeout waited on asyncio.sleep(), "
        "wait_for() or asyncio.timeout(), it waited real seconds. Move the event loop's clock with "
        "`await clock.advance(...)`, or freeze with tick=True."
    ) in harness_notes(result)
    in_with_block = [note for note in harness_notes(result) if "test_ticks_in_a_with_block" in note]
    assert in_with_block == [  # said once for three ticks, by the clock's own `with` block
        "harness: clock.tick(60) at test_clock_hints_come_with_the_failure.py:26 in test_ticks_in_a_with_block moved "
        "the wall clock past 1 timer(s) of the event loop without firing them (asyncio.sleep, call_later): "
        "`await clock.advance(60)` moves the loop's clock too and fires them."
    ]


def test_a_query_budget_points_at_the_tests_line(harness_pytester: pytest.Pytester) -> None:
    """The failure's location is the test's `with` line, not contextlib's."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        from sqlalchemy import select
        from harness import assert_max_queries
        from conftest import Note

        async def test_budget(db_session):
            with assert_max_queries(db_session, 1):
                for _ in range(3):
                    await db_session.scalars(select(Note))
        """
    )
    result = run(harness_pytester, "--harness-summary=summary.json")
    result.assert_outcomes(failed=1)
    failure = json.loads((harness_pytester.path / "summary.json").read_text())["failures"]
    (only,) = failure.values()
    assert only["location"].endswith("test_a_query_budget_points_at_the_tests_line.py:6")
    assert only["type"] == "AssertionError"
    assert only["message"].startswith("Expected at most 1 queries but the block ran 3:")


def test_real_commits_for_one_test(harness_pytester: pytest.Pytester) -> None:
    """@pytest.mark.db_session(real_commits=True): concurrent sessions commit for real, and are cleaned up."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import asyncio
        import pytest
        from sqlalchemy.ext.asyncio import AsyncSession
        from conftest import Note, count_notes

        @pytest.mark.db_session(real_commits=True)
        async def test_concurrent(db_session, db_engine):
            async def add(text):
                async with AsyncSession(db_engine) as own:
                    own.add(Note(text=text))
                    await own.commit()
            await asyncio.gather(*(add(str(n)) for n in range(5)))
            assert await count_notes(db_session) == 5

        async def test_cleaned(db_session):
            assert await count_notes(db_session) == 0
        """
    )
    run(harness_pytester).assert_outcomes(passed=2)


def test_an_aborted_run_is_not_said_to_have_no_regressions(harness_pytester: pytest.Pytester) -> None:
    """A run that stopped before its tests ran says it was not compared."""
    harness_pytester.makepyfile(test_app="def test_ok():\n    pass\n")
    run(harness_pytester, "--harness-summary=before.json").assert_outcomes(passed=1)
    harness_pytester.makepyfile(
        test_app="import pytest\n\ndef test_ok():\n    pytest.exit('the server is down')\n"
    )
    result = run(harness_pytester, "--harness-summary=after.json", "--harness-summary-compare=before.json")
    result.stdout.fnmatch_lines(
        [
            "harness: run summary written to after.json (the run stopped early (exit status 2), so it was not "
            "compared with before.json)"
        ]
    )


def test_an_overridden_database_url_fixture_lets_its_server_through(
    harness_pytester: pytest.Pytester,
) -> None:
    """The network guard admits the remote server that harness_database_url names (remote databases
    allowed), even as an overridden fixture."""
    ini = harness_pytester.path / "tox.ini"
    ini.write_text(ini.read_text().rstrip() + "\nharness_allow_remote_database = true\n")
    harness_pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def harness_database_url():
            return "postgresql://app@db.example.invalid:5432/app"
        """
    )
    harness_pytester.makepyfile(
        """
        import socket
        import pytest
        from harness import NetworkBlockedError

        def test_reaches_for_the_server(harness_database_url):
            with pytest.raises(OSError):  # DNS fails: the guard did not refuse it first
                socket.getaddrinfo("db.example.invalid", 5432)

        def test_other_hosts_stay_blocked(harness_database_url):
            socket.getaddrinfo("api.example.invalid", 443)
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["E   *NetworkBlockedError: harness blocked a connection to 'api.example.invalid' port 443: *"]
    )


def test_tests_without_factories_keep_their_random_state(harness_pytester: pytest.Pytester) -> None:
    """Loading harness does not reseed factory-boy or Faker for a test that uses no factory."""
    harness_pytester.makeconftest(
        """
        import factory.random

        BEFORE = factory.random.get_random_state()
        """
    )
    harness_pytester.makepyfile(
        """
        import factory.random
        from conftest import BEFORE

        def test_state():
            assert factory.random.get_random_state() == BEFORE
        """
    )
    run(harness_pytester, "--harness-seed=1").assert_outcomes(passed=1)


def test_models_that_cannot_become_tables_stop_the_run_once(harness_pytester: pytest.Pytester) -> None:
    """A foreign key to a misspelt table is one SchemaError for the run, not the same error per test."""
    harness_pytester.makeconftest(
        """
        import pytest
        from sqlalchemy import ForeignKey
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

        class Base(DeclarativeBase):
            pass

        class Order(Base):
            __tablename__ = "orders"
            id: Mapped[int] = mapped_column(primary_key=True)
            customer_id: Mapped[int] = mapped_column(ForeignKey("custmers.id"))

        @pytest.fixture(scope="session")
        def harness_schema():
            return Base.metadata
        """
    )
    harness_pytester.makepyfile(
        """
        async def test_one(db_session):
            pass

        async def test_two(db_session):
            pass
        """
    )
    result = harness_pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        [
            "*! _pytest.outcomes.Exit: harness could not set up the test database: The models cannot be turned "
            "into tables for test database 'test_*': NoReferencedTableError: Foreign key associated with "
            "column 'orders.customer_id' could not find table 'custmers' *Fix the models (harness_schema returns "
            "their MetaData).*"
        ]
    )
    assert result.stdout.str().count("NoReferencedTableError") == 1
