"""Alembic migrations run on harness's own connection: the test schema, and a check against the models.

    migrations = AlembicMigrations("alembic.ini")

    @pytest.fixture(scope="session")
    def harness_schema():
        return migrations                      # the template database is migrated to head, once

    def test_the_migrations_match_the_models(harness_database_url):
        migrations.check(Base.metadata, url=harness_database_url)

harness runs the project's migration scripts itself and never its ``env.py``: an async ``env.py``
would start an event loop of its own inside harness's, and any ``env.py`` connects to the database
the project's settings name, which harness must never touch. What ``env.py`` passes to
``context.configure`` besides the connection (``version_table``, ``include_schemas``,
``render_as_batch``…) goes in ``configure=``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, event, inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError

from harness.db.testdb import TestDatabase, run_aside
from harness.exceptions import MigrationError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = ["AlembicMigrations"]


def _alembic_config(source: str | os.PathLike[str] | Config) -> Config:
    try:
        from alembic.config import Config
    except ImportError:
        msg = (
            "AlembicMigrations needs alembic: `pip install 'pytest-async-harness[alembic]'` "
            "(or add alembic to your test dependencies)."
        )
        raise MigrationError(msg) from None
    if isinstance(source, Config):
        return source
    path = Path(source)
    if path.is_dir():  # a script location: the folder that holds env.py and versions/
        config = Config()
        config.set_main_option("script_location", str(path.absolute()))
        return config
    if not path.is_file():
        msg = (
            f"No Alembic configuration at {str(path)!r} (looked from {os.getcwd()}). Give the path of your "
            "alembic.ini, of the migrations folder (the one with env.py and versions/), or an alembic Config."
        )
        raise MigrationError(msg)
    config = Config(str(path))
    location = config.get_main_option("script_location")
    # alembic reads a relative script_location from the working directory; pytest may run elsewhere.
    if location and ":" not in location and not Path(location).is_absolute() and not Path(location).exists():
        beside = path.absolute().parent / location
        if beside.exists():
            config.set_main_option("script_location", str(beside))
    return config


class AlembicMigrations:
    """A project's Alembic migrations, run on harness's connection to its test database.

    ``source`` is the project's ``alembic.ini``, its migrations folder, or an
    ``alembic.config.Config``. As the value of the ``harness_schema`` fixture (or
    ``TestDatabase(schema=...)``) it upgrades the test database to ``revision`` (``"head"`` by
    default): on PostgreSQL the template is migrated once per run and cloned for each worker.
    ``configure`` holds what the project's ``env.py`` passes to ``context.configure`` besides the
    connection; the ``sqlalchemy.url`` of the configuration is never used.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Config = "alembic.ini",
        *,
        revision: str = "head",
        configure: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = _alembic_config(source)
        self.revision = revision
        self.configure = dict(configure or {})
        if "connection" in self.configure:
            msg = "AlembicMigrations runs on harness's own connection: leave `connection` out of configure."
            raise MigrationError(msg)

    def __repr__(self) -> str:
        where = self.config.config_file_name or self.config.get_main_option("script_location")
        return f"AlembicMigrations({where!r}, revision={self.revision!r})"

    @functools.cached_property
    def scripts(self) -> ScriptDirectory:
        """The project's migration scripts (alembic's ScriptDirectory), read once: a check upgrades,
        downgrades and upgrades again, and would load every script each time."""
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        try:
            scripts = ScriptDirectory.from_config(self.config)
        except CommandError as exc:
            msg = f"Alembic cannot read the migrations of {self!r}: {exc}"
            raise MigrationError(msg) from exc
        # alembic reads relative version_locations from the working directory, and skips a folder
        # that is not there: from another folder there would be no migrations at all.
        beside = (
            Path(self.config.config_file_name).absolute().parent if self.config.config_file_name else None
        )
        if scripts.version_locations and beside is not None:
            scripts.version_locations = [
                str(beside / location)
                if ":" not in str(location)
                and not Path(location).is_absolute()
                and not Path(location).exists()
                else location
                for location in scripts.version_locations
            ]
        return scripts

    @property
    def schema_fingerprint(self) -> str:
        """A hash of the migration scripts and the target revision: a reused test database whose
        migrations changed is rebuilt."""
        digest = hashlib.sha256(self.revision.encode())
        try:
            revisions = list(self.scripts.walk_revisions())
        except MigrationError:
            raise
        except Exception as exc:  # a script that does not import: a module it needs, a syntax error
            msg = (
                f"Alembic cannot load the migration scripts of {self!r}: {type(exc).__name__}: {exc}. "
                f"(prepend_sys_path in alembic.ini is read from the working directory, {os.getcwd()}.)"
            )
            raise MigrationError(msg) from exc
        for script in sorted(revisions, key=lambda s: s.revision):
            digest.update(script.revision.encode())
            if script.path:
                digest.update(Path(script.path).read_bytes())
        return digest.hexdigest()[:16]

    def __call__(self, connection: Connection) -> None:
        """Upgrade the database behind ``connection`` to ``revision``: the schema callable."""
        self.upgrade(connection, self.revision)

    def upgrade(self, connection: Connection, revision: str = "head") -> None:
        """Upgrade the database behind ``connection`` (a sync Connection) to ``revision``."""
        self._run(connection, revision, upgrading=True)

    def downgrade(self, connection: Connection, revision: str = "base") -> None:
        """Downgrade the database behind ``connection`` (a sync Connection) to ``revision``."""
        self._run(connection, revision, upgrading=False)

    def _run(self, connection: Connection, revision: str, *, upgrading: bool) -> None:
        from alembic.runtime.environment import EnvironmentContext
        from alembic.util import CommandError

        scripts = self.scripts
        planned: list[Any] = []
        applied: list[Any] = []

        def steps(current: Any, _context: Any) -> list[Any]:
            # What alembic.command.upgrade and downgrade do; harness keeps the steps to name the
            # one that fails.
            move = scripts._upgrade_revs if upgrading else scripts._downgrade_revs
            planned.extend(move(revision, current))
            return planned

        def note(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:  # alembic passes them by name
            applied.append(step)

        statements: list[str] = []
        with _recording(connection, statements):
            try:
                with EnvironmentContext(
                    self.config, scripts, fn=steps, destination_rev=revision
                ) as environment:
                    environment.configure(connection=connection, on_version_apply=note, **self.configure)
                    with environment.begin_transaction():
                        environment.run_migrations()
            except CommandError as exc:  # an unknown revision, several heads
                msg = f"Alembic cannot {'upgrade' if upgrading else 'downgrade'} to {revision!r}: {exc}"
                raise MigrationError(msg) from exc
            except Exception as exc:
                raise _failed(
                    exc,
                    planned[len(applied)] if len(planned) > len(applied) else None,
                    statements,
                    connection,
                ) from exc

    def check(
        self,
        metadata: MetaData,
        *,
        url: str | URL | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Check the migrations against the models, as real projects do by hand.

        In a scratch test database of its own (``test_<name>_migrations``, on the server or next
        to the SQLite file that ``url`` names; dropped afterwards), this upgrades to head, compares
        the database with ``metadata``, downgrades to base (which must leave no table behind),
        upgrades again and compares again. Raises MigrationError naming every difference.
        Synchronous, so it works from sync and async tests alike.
        """
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        base = TestDatabase(url, worker=worker).template_name.removesuffix("_template")
        # A template of its own per worker: workers checking at once never drop one another's.
        database = TestDatabase(
            url,
            name=f"{base}_migrations{f'_{worker}' if worker else ''}",
            engine_options=dict(engine_options or {}),
        )

        async def run() -> None:
            engine = await database.create()
            try:
                async with engine.connect() as connection:
                    await connection.run_sync(self._check, metadata)
            finally:
                await database.drop()

        run_aside(run())

    def _check(self, connection: Connection, metadata: MetaData) -> None:
        heads = self.scripts.get_heads()
        if len(heads) > 1:
            msg = (
                f"The migrations have {len(heads)} heads ({', '.join(sorted(heads))}): two branches were never "
                "merged. Merge them with `alembic merge heads`."
            )
            raise MigrationError(msg)
        with connection.begin():
            self.upgrade(connection, "head")
        self._compare(connection, metadata, "after upgrading an empty database to head")
        with connection.begin():
            self.downgrade(connection, "base")
        version_table = self.configure.get("version_table", "alembic_version")
        left = sorted(set(inspect(connection).get_table_names()) - {version_table, "sqlite_sequence"})
        connection.rollback()  # the inspection's transaction
        if left:
            msg = (
                f"Downgrading to base left table(s) behind: {', '.join(left)}. The downgrade() of the "
                "migration that creates them must drop them."
            )
            raise MigrationError(msg)
        with connection.begin():
            self.upgrade(connection, "head")
        self._compare(connection, metadata, "after downgrading to base and upgrading to head again")

    def _compare(self, connection: Connection, metadata: MetaData, when: str) -> None:
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        options = {"compare_type": True, **self.configure, "target_metadata": metadata}
        with connection.begin():
            differences = compare_metadata(MigrationContext.configure(connection, opts=options), metadata)
        if differences:
            lines = "\n".join(f"  - {_describe(difference)}" for difference in differences)
            msg = (
                f"The database the migrations build differs from the models ({when}):\n{lines}\n"
                "Write a migration for the models' side (`alembic revision --autogenerate` drafts one), "
                "or change the models to match."
            )
            raise MigrationError(msg)


@contextmanager
def _recording(connection: Connection, statements: list[str]) -> Iterator[None]:
    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(connection, "before_cursor_execute", record)


def _failed(exc: Exception, step: Any, statements: list[str], connection: Connection) -> MigrationError:
    if step is None:
        what = "A migration"
    else:
        script = step.revision
        direction = "upgrade" if step.is_upgrade else "downgrade"
        where = os.path.relpath(script.path) if script.path else "?"
        what = f"The {direction} of migration {script.revision} ({script.doc!r}, {where})"
    if isinstance(exc, DBAPIError) and exc.statement:
        sql = f"The SQL: {exc.statement.strip()}"
    elif statements:
        sql = f"The last SQL it ran: {statements[-1].strip()}"
    else:
        sql = "It ran no SQL."
    database = connection.engine.url.database
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc) else ""
    msg = (
        f"{what} failed on test database {database!r}: {type(exc).__name__}: {reason}\n{sql}\n"
        "Fix the migration; the half-migrated test database was discarded."
    )
    return MigrationError(msg)


def _describe(difference: Any) -> str:
    """One of alembic's compare_metadata() differences, in words."""
    if isinstance(difference, list):  # a column's type, nullability, default or comment
        return "; ".join(_describe(part) for part in difference)
    kind = difference[0]
    if kind in ("add_table", "remove_table"):
        table = difference[1].name
        return (
            f"table {table}: in the models, not created by the migrations"
            if kind == "add_table"
            else f"table {table}: created by the migrations, not in the models"
        )
    if kind in ("add_column", "remove_column"):
        table, column = difference[2], difference[3].name
        side = (
            "in the models, not created by the migrations"
            if kind == "add_column"
            else "created by the migrations, not in the models"
        )
        return f"column {table}.{column}: {side}"
    if kind.startswith("modify_"):
        _, _, table, column, _, database_value, models_value = difference
        return f"column {table}.{column}: {kind.removeprefix('modify_')} is {database_value!r} in the database, {models_value!r} in the models"
    thing = difference[1]
    name = getattr(thing, "name", None) or thing
    table = getattr(getattr(thing, "table", None), "name", None)
    side = (
        "in the models, not created by the migrations"
        if kind.startswith("add_")
        else "created by the migrations, not in the models"
    )
    label = kind.split("_", 1)[1].replace("fk", "foreign key")
    return f"{label} {name}{f' on {table}' if table else ''}: {side}"
