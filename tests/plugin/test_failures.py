"""What a user sees when a run goes wrong through harness: the output lines are the contract."""

from __future__ import annotations

import pytest

from tests.plugin.test_fixtures import MODELS


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
            "event loop, but harness's db_engine and db_session run in the 'function'-scoped loop of async fixtures, "
            "and a database connection cannot move between event loops.",
            'Give fixtures and tests the same loop: set asyncio_default_fixture_loop_scope = "session" (and '
            'asyncio_default_test_loop_scope = "session") in your pytest configuration, or remove loop_scope from '
            "the test's asyncio marker.",
        ],
        consecutive=True,
    )


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
