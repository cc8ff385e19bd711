"""harness.postgres: a throwaway PostgreSQL server, on loopback, gone when stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from harness import DatabaseUnavailableError, TestDatabase
from harness.postgres import ThrowawayPostgres, find_bindir, main

try:
    find_bindir()
except DatabaseUnavailableError:
    pytestmark = pytest.mark.skip(reason="no PostgreSQL server binaries on this machine")


@pytest.fixture(autouse=True)
def _once_per_suite(on_postgres: bool) -> None:
    if on_postgres:
        pytest.skip("the same on both backends: runs in the SQLite session")


async def test_a_server_starts_on_loopback_serves_tests_and_leaves_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    server = ThrowawayPostgres(state=tmp_path / "state.json", say=said.append)
    url = server.start()
    try:
        assert url.startswith("postgresql://postgres:")
        assert make_url(url).host == "127.0.0.1"
        assert server.start() == url  # one server: a second start finds it
        assert server.url == url
        root = Path(server._state()["root"])  # type: ignore[index]
        async with TestDatabase(url.rsplit("/", 1)[0] + "/throwaway") as database:
            assert database.engine is not None
            async with database.engine.connect() as connection:
                assert await connection.scalar(text("SHOW fsync")) == "off"
                assert await connection.scalar(text("SHOW listen_addresses")) == "127.0.0.1"
        # other users of the machine reach 127.0.0.1 too: without the password, no entry
        anyone = url.replace(f":{make_url(url).password}@", "@").rsplit("/", 1)[0] + "/anything"
        with pytest.raises(
            DatabaseUnavailableError, match="refused the connection: password authentication failed"
        ):
            await TestDatabase(anyone).create()
    finally:
        server.stop()
    assert server.url is None
    assert not root.exists()
    assert not (tmp_path / "state.json").exists()
    assert said[0].startswith("creating a throwaway cluster in ")
    assert said[-1] == "stopped; its files are deleted"


def test_the_command_line_starts_prints_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the state file is per working directory
    assert main(["url"]) == 1
    assert "no server is running; start one with: python -m harness.postgres start" in capsys.readouterr().err
    assert main(["start"]) == 0
    url = capsys.readouterr().out.strip()
    try:
        assert main(["url"]) == 0
        assert capsys.readouterr().out.strip() == url
    finally:
        assert main(["stop"]) == 0
    assert main(["url"]) == 1
    assert main(["frobnicate"]) == 2


def test_run_gives_the_command_the_url_and_stops_after(tmp_path: Path) -> None:
    script = "import os; print(os.environ['HARNESS_DATABASE_URL'])"
    result = subprocess.run(
        [sys.executable, "-m", "harness.postgres", "run", "--", sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert make_url(url).host == "127.0.0.1"
    assert "harness.postgres: stopped; its files are deleted" in result.stderr


def test_no_binaries_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    with pytest.raises(
        DatabaseUnavailableError,
        match=r"No PostgreSQL server binaries \(initdb, pg_ctl\) were found.*apt-get install postgresql",
    ):
        find_bindir()


def test_the_plugin_option_starts_a_server_for_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in (
        "HARNESS_DATABASE_URL",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_TESTRUNUID",
        "PYTEST_ADDOPTS",
    ):
        monkeypatch.delenv(variable, raising=False)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import os
        from sqlalchemy import text

        async def test_on_the_server(harness_database, db_session):
            assert harness_database.is_postgres
            assert harness_database.server_url.host == "127.0.0.1"
            assert await db_session.scalar(text("SHOW fsync")) == "off"
            print("SERVER", harness_database.server_url.port)
        """
    )
    result = pytester.runpytest_subprocess("--harness-start-postgres", "-n", "2", "-p", "xdist", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "harness: test database postgresql+asyncpg://postgres:***@127.0.0.1:*; a throwaway server harness started (--harness-start-postgres)"
        ]
    )
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("harness-postgres-run-*.json"))  # stopped
    both = pytester.runpytest_subprocess(
        "--harness-start-postgres", "--harness-database-url=postgresql://postgres@127.0.0.1/app"
    )
    both.stderr.fnmatch_lines(
        [
            "ERROR: --harness-start-postgres starts a PostgreSQL server for the run, and a database URL is given too (URL from --harness-database-url). Give one of them."
        ]
    )
