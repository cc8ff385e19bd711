"""harness.migrations: Alembic migrations run on harness's connection, never through env.py, and checked against models."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from harness import AlembicMigrations, MigrationError, TestDatabase
from tests.unit.test_databases import admin, database_names, server_url, table_names

__all__ = ["admin", "server_url"]  # fixtures shared with test_databases

MIGRATIONS = {
    "0001_users.py": '''
        """create users"""
        import os

        import sqlalchemy as sa
        from alembic import op

        revision = "0001"
        down_revision = None


        def upgrade():
            op.create_table(
                "users", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50), nullable=False)
            )
            with open(os.environ["MIGRATION_RUNS"], "a") as runs:
                runs.write("0001\\n")


        def downgrade():
            op.drop_table("users")
        ''',
    "0002_email.py": '''
        """add users.email"""
        import sqlalchemy as sa
        from alembic import op

        revision = "0002"
        down_revision = "0001"


        def upgrade():
            op.add_column("users", sa.Column("email", sa.String(100)))


        def downgrade():
            with op.batch_alter_table("users") as batch:
                batch.drop_column("email")
        ''',
}


def models(*extra: Column[object]) -> MetaData:
    metadata = MetaData()
    Table(
        "users",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(50), nullable=False),
        Column("email", String(100)),
        *extra,
    )
    return metadata


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An Alembic project whose env.py must never run and whose own database must never be touched."""
    root = tmp_path / "project"
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "alembic.ini").write_text(
        textwrap.dedent(
            f"""
            [alembic]
            script_location = migrations
            path_separator = os
            sqlalchemy.url = sqlite:///{root / "production.db"}
            """
        )
    )
    (root / "migrations" / "env.py").write_text('raise RuntimeError("env.py ran")\n')
    for name, source in MIGRATIONS.items():
        (versions / name).write_text(textwrap.dedent(source))
    monkeypatch.setenv("MIGRATION_RUNS", str(root / "runs.txt"))
    monkeypatch.chdir(root)
    return root


def add_migration(project: Path, name: str, source: str) -> None:
    (project / "migrations" / "versions" / name).write_text(textwrap.dedent(source))


def scratch(server_url: str, migrations: AlembicMigrations, **options: object) -> TestDatabase:
    return TestDatabase(server_url, name=f"mig_{uuid.uuid4().hex[:8]}", schema=migrations, **options)  # type: ignore[arg-type]


async def version_of(database: TestDatabase) -> str:
    assert database.engine is not None
    async with database.engine.connect() as connection:
        return str((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one())


async def test_the_test_database_is_migrated_to_head_on_harness_connection(
    project: Path, server_url: str
) -> None:
    async with scratch(server_url, AlembicMigrations("alembic.ini")) as database:
        assert await table_names(database) == ["alembic_version", "users"]
        assert await version_of(database) == "0002"
    # env.py (which would connect to the project's own database) never ran, and that database is untouched
    assert not (project / "production.db").exists()


async def test_a_named_revision_stops_there(project: Path, server_url: str) -> None:
    async with scratch(server_url, AlembicMigrations(project / "migrations", revision="0001")) as database:
        assert await version_of(database) == "0001"
        assert database.engine is not None
        async with database.engine.connect() as connection:
            columns = await connection.run_sync(
                lambda c: [col["name"] for col in c.dialect.get_columns(c, "users")]
            )
        assert columns == ["id", "name"]


async def test_the_template_is_migrated_once_and_cloned_for_each_worker(
    project: Path, server_url: str
) -> None:
    migrations, name = AlembicMigrations("alembic.ini"), f"mig_{uuid.uuid4().hex[:8]}"
    workers = [
        TestDatabase(server_url, name=name, worker=w, schema=migrations, run_id="one-run")
        for w in ("gw0", "gw1")
    ]
    for database in workers:
        await database.create()
    try:
        for database in workers:
            assert await version_of(database) == "0002"
        # on SQLite too, the workers copy one template file
        assert (project / "runs.txt").read_text().split() == ["0001"]
    finally:
        for database in workers:
            await database.drop()


async def test_a_failing_migration_is_named_with_its_sql_and_nothing_is_left(
    project: Path, server_url: str, admin_or_none: AsyncConnection | None
) -> None:
    add_migration(
        project,
        "0003_backfill.py",
        '''
        """backfill names"""
        from alembic import op

        revision = "0003"
        down_revision = "0002"


        def upgrade():
            op.execute("UPDATE no_such_table SET name = 'x'")


        def downgrade():
            pass
        ''',
    )
    database = scratch(server_url, AlembicMigrations("alembic.ini"))
    with pytest.raises(MigrationError) as caught:
        await database.create()
    message = str(caught.value)
    assert "The upgrade of migration 0003 ('backfill names', " in message
    assert "0003_backfill.py" in message
    assert "The SQL: UPDATE no_such_table SET name = 'x'" in message
    assert "no_such_table" in message.splitlines()[0]  # the server's own words
    if admin_or_none is not None:
        assert database.template_name not in await database_names(admin_or_none)
    else:
        assert not list((project.parent).glob(f"{database.name}.sqlite3*"))


@pytest.fixture
def admin_or_none(on_postgres: bool, request: pytest.FixtureRequest) -> AsyncConnection | None:
    return request.getfixturevalue("admin") if on_postgres else None


async def test_an_unknown_revision_is_named(project: Path, server_url: str) -> None:
    with pytest.raises(MigrationError, match=r"^Alembic cannot upgrade to 'nope': "):
        await scratch(server_url, AlembicMigrations("alembic.ini", revision="nope")).create()


def test_changed_migrations_change_the_fingerprint_so_a_reused_database_is_rebuilt(project: Path) -> None:
    before = AlembicMigrations("alembic.ini").schema_fingerprint
    assert AlembicMigrations("alembic.ini").schema_fingerprint == before
    assert AlembicMigrations("alembic.ini", revision="0001").schema_fingerprint != before
    path = project / "migrations" / "versions" / "0002_email.py"
    path.write_text(path.read_text().replace("String(100)", "String(200)"))
    assert AlembicMigrations("alembic.ini").schema_fingerprint != before


def test_the_check_passes_when_migrations_and_models_agree(project: Path, server_url: str) -> None:
    AlembicMigrations("alembic.ini").check(models(), url=server_url)


def test_the_check_names_what_the_migrations_lack(project: Path, server_url: str) -> None:
    with pytest.raises(MigrationError) as caught:
        AlembicMigrations("alembic.ini").check(models(Column("nickname", String(20))), url=server_url)
    message = str(caught.value)
    assert "(after upgrading an empty database to head)" in message
    assert "column users.nickname: in the models, not created by the migrations" in message
    assert "alembic revision --autogenerate" in message


def test_the_check_finds_a_downgrade_that_leaves_a_table(project: Path, server_url: str) -> None:
    add_migration(
        project,
        "0003_audit.py",
        '''
        """audit log"""
        import sqlalchemy as sa
        from alembic import op

        revision = "0003"
        down_revision = "0002"


        def upgrade():
            op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))


        def downgrade():
            pass
        ''',
    )
    metadata = models()
    Table("audit", metadata, Column("id", Integer, primary_key=True))
    with pytest.raises(MigrationError, match=r"Downgrading to base left table\(s\) behind: audit\. "):
        AlembicMigrations("alembic.ini").check(metadata, url=server_url)


def test_the_check_refuses_unmerged_branches(project: Path, server_url: str) -> None:
    add_migration(
        project,
        "0003_branch.py",
        '''
        """a branch"""
        revision = "0003"
        down_revision = "0001"


        def upgrade():
            pass


        def downgrade():
            pass
        ''',
    )
    with pytest.raises(MigrationError, match=r"2 heads \(0002, 0003\).*alembic merge heads"):
        AlembicMigrations("alembic.ini").check(models(), url=server_url)


def test_a_relative_script_location_is_found_beside_the_ini_from_another_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "tests").mkdir()
    monkeypatch.chdir(project / "tests")
    migrations = AlembicMigrations("../alembic.ini")
    assert [script.revision for script in migrations.scripts.walk_revisions()] == ["0002", "0001"]


def test_relative_version_locations_are_found_beside_the_ini_too(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = project / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "path_separator = os", "path_separator = os\nversion_locations = migrations/versions"
        )
    )
    (project / "tests").mkdir()
    monkeypatch.chdir(project / "tests")  # alembic alone would find no migrations from here
    assert [script.revision for script in AlembicMigrations("../alembic.ini").scripts.walk_revisions()] == [
        "0002",
        "0001",
    ]


def test_a_migration_that_does_not_import_is_named(project: Path) -> None:
    add_migration(
        project, "0003_broken.py", 'import no_such_module\nrevision = "0003"\ndown_revision = "0002"\n'
    )
    with pytest.raises(
        MigrationError,
        match=r"cannot load the migration scripts of .*ModuleNotFoundError: No module named 'no_such_module'.*prepend_sys_path",
    ):
        _ = AlembicMigrations("alembic.ini").schema_fingerprint


def test_bad_sources_say_what_to_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        MigrationError, match=r"No Alembic configuration at 'alembic.ini' \(looked from .*\)\. Give"
    ):
        AlembicMigrations()
    with pytest.raises(MigrationError, match="leave `connection` out of configure"):
        AlembicMigrations(tmp_path, configure={"connection": None})
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = nowhere\n")
    with pytest.raises(MigrationError, match=r"Alembic cannot read the migrations of .*Path doesn't exist"):
        _ = AlembicMigrations().scripts
    monkeypatch.setitem(sys.modules, "alembic.config", None)
    with pytest.raises(MigrationError, match=r"pip install 'pytest-async-harness\[alembic\]'"):
        AlembicMigrations(tmp_path)
