"""Command-line options and ini keys: --harness-reuse-db, --harness-create-db, and an unused plugin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.plugin.test_fixtures import MODELS

REMEMBER_DATABASE = """
    async def test_remember(harness_database, db_session):
        with open("database.txt", "w") as f:
            f.write(str(harness_database.url))
"""


def _sqlite_only(harness_pytester: pytest.Pytester) -> None:
    import os

    if os.environ.get("HARNESS_DATABASE_URL", "").startswith("postgres"):
        pytest.skip(
            "checks the SQLite file on disk; the PostgreSQL side is tested in tests/unit/test_databases.py"
        )


def test_without_reuse_the_database_is_dropped_after_the_run(harness_pytester: pytest.Pytester) -> None:
    """The default run leaves no test database behind."""
    _sqlite_only(harness_pytester)
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(REMEMBER_DATABASE)
    harness_pytester.runpytest_subprocess().assert_outcomes(passed=1)
    path = Path((harness_pytester.path / "database.txt").read_text().split("///", 1)[1])
    assert not path.exists()


def test_reuse_db_keeps_the_schema_and_create_db_rebuilds_it(harness_pytester: pytest.Pytester) -> None:
    """--harness-reuse-db builds the schema once and keeps the template, yet rows a run committed
    outside a scope are gone in the next run; --harness-create-db rebuilds the schema."""
    _sqlite_only(harness_pytester)
    harness_pytester.makeconftest(
        MODELS
        + """
    @pytest.fixture(scope="session")
    def harness_schema():
        def build_notes(connection):
            with open("builds.txt", "a") as builds:
                builds.write("built\\n")
            Base.metadata.create_all(connection)
        return build_notes
    """
    )
    harness_pytester.makepyfile(
        REMEMBER_DATABASE
        + """
    async def test_count_and_add_a_row(db_engine):
        async with db_engine.begin() as connection:
            before = (await connection.exec_driver_sql("SELECT count(*) FROM notes")).scalar()
            await connection.exec_driver_sql("INSERT INTO notes (text) VALUES ('left over')")
        print(f"NOTES BEFORE={before}")
    """
    )
    for options, builds in (
        (["--harness-reuse-db"], 1),
        (["--harness-reuse-db"], 1),
        (["--harness-reuse-db", "--harness-create-db"], 2),
    ):
        result = harness_pytester.runpytest_subprocess("-s", "-p", "no:randomly", *options)
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(["*NOTES BEFORE=0*"])
        assert (harness_pytester.path / "builds.txt").read_text().splitlines() == ["built"] * builds
    path = Path((harness_pytester.path / "database.txt").read_text().split("///", 1)[1])
    template = path.with_name(path.stem.rsplit("_", 1)[0] + "_template.sqlite3")  # test_<name>_<run>
    assert (path.exists(), template.exists()) == (False, True)  # the run's copy goes, the schema stays
    harness_pytester.runpytest_subprocess().assert_outcomes(passed=2)
    assert not template.exists()


def test_plugin_is_inert_when_its_fixtures_are_unused(harness_pytester: pytest.Pytester) -> None:
    """Loading harness creates no database and changes no test that does not ask for its fixtures."""
    harness_pytester.makeconftest(MODELS)
    harness_pytester.makepyfile(
        """
        import asyncio
        import sys

        def test_sync():
            assert "harness.db.testdb" in sys.modules  # the plugin is loaded...

        async def test_async():
            await asyncio.sleep(0)

        def test_no_database_was_made(request):
            assert "harness_database" not in request.fixturenames
        """
    )
    result = harness_pytester.runpytest_subprocess("-p", "no:randomly", "--setup-plan")
    result.stdout.no_fnmatch_line("*SETUP    S harness_database*")
    harness_pytester.runpytest_subprocess().assert_outcomes(passed=3)


def test_options_are_listed_in_help(harness_pytester: pytest.Pytester) -> None:
    """pytest --help shows harness's options and ini keys."""
    result = harness_pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        [
            "harness: async integration tests:",
            "  --harness-database-url=URL",
            "*--harness-reuse-db*",
            "*--harness-create-db*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["  harness_database_url (string):*", "  harness_allow_remote_database (bool):*"]
    )


def test_the_header_names_the_database_and_where_its_url_came_from(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Option, then environment, then ini: the first that is set wins, and the header says which."""
    ini = harness_pytester.path / "tox.ini"  # what makeini wrote
    ini.write_text(
        ini.read_text().rstrip() + "\nharness_database_url = sqlite+aiosqlite:///from_ini.sqlite3\n"
    )
    harness_pytester.makepyfile("def test_nothing(): pass")

    def header(*args: str) -> str:
        lines = harness_pytester.runpytest("--collect-only", *args).stdout.lines
        return next(line for line in lines if line.startswith("harness: test database"))

    name = "test_" + next(
        line.split("=")[1].strip()
        for line in ini.read_text().splitlines()
        if line.startswith("harness_database_name")
    )
    monkeypatch.delenv("HARNESS_DATABASE_URL", raising=False)
    name += "_" + "[0-9a-f]" * 6  # the run's
    assert re.fullmatch(
        rf"harness: test database sqlite\+aiosqlite:///{name}\.sqlite3; URL from harness_database_url in tox\.ini",
        header(),
    )
    monkeypatch.setenv("HARNESS_DATABASE_URL", "postgresql://me:secret@127.0.0.1:5432/app")
    assert re.fullmatch(
        rf"harness: test database postgresql\+asyncpg://me:\*\*\*@127\.0\.0\.1:5432/{name}; URL from \$HARNESS_DATABASE_URL",
        header(),
    )
    assert re.fullmatch(
        rf"harness: test database sqlite\+aiosqlite:///data/{name}\.sqlite3; URL from --harness-database-url",
        header("--harness-database-url=sqlite+aiosqlite:///data/given.sqlite3"),
    )
    ini.write_text(ini.read_text().replace("harness_database_url", "# harness_database_url"))
    monkeypatch.delenv("HARNESS_DATABASE_URL")
    assert re.search(
        rf"/harness/{name}\.sqlite3; embedded SQLite: no URL given \(--harness-database-url, "
        r"\$HARNESS_DATABASE_URL or the harness_database_url ini key\)$",
        header(),
    )
