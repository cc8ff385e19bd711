"""The start-up probe: a commit inside a rollback scope must not survive the scope."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from harness.db.commits import PROBE_TABLE
from harness.db.scopes import RollbackScope
from harness.db.urls import HARNESS_MARK, check_test_database, is_memory, safe_url
from harness.exceptions import IsolationProbeError, UnsafeDatabaseError

__all__ = ["probe_isolation"]


async def probe_isolation(engine: AsyncEngine) -> None:
    """Check that a commit inside a rollback scope really is rolled back on this engine.

    Creates a scratch table, commits a row in a scope, ends the scope and counts the rows from a
    fresh connection. Raises `IsolationProbeError` if the row survived (a driver that leaks).
    """
    check_test_database(engine.url, allow_remote=True)
    await _refuse_a_database_harness_did_not_create(engine)
    async with engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INTEGER)"))
    try:
        async with RollbackScope(engine, _trusted=True) as session:
            await session.execute(text(f"INSERT INTO {PROBE_TABLE} (id) VALUES (1)"))
            await session.commit()
            async with session.begin_nested():
                await session.execute(text(f"INSERT INTO {PROBE_TABLE} (id) VALUES (2)"))
            await session.commit()
        async with engine.connect() as connection:
            leaked = (await connection.execute(text(f"SELECT count(*) FROM {PROBE_TABLE}"))).scalar_one()
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {PROBE_TABLE}"))
    if leaked:
        msg = (
            f"Test isolation is broken on {safe_url(engine.url)!r}: {leaked} row(s) "
            "committed inside a rollback scope were still there after the scope rolled back. Create the engine "
            "with harness.create_test_engine(), which applies the driver fixes, instead of create_async_engine()."
        )
        raise IsolationProbeError(msg)


async def _refuse_a_database_harness_did_not_create(engine: AsyncEngine) -> None:
    # The probe writes a scratch table: only into a database harness made (or a new SQLite file).
    url = engine.url
    if url.get_backend_name() == "sqlite":
        foreign = not is_memory(url) and _foreign_sqlite_file(Path(str(url.database)))
    else:
        async with engine.connect() as connection:
            comment = await connection.scalar(
                text(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
                )
            )
        foreign = not str(comment or "").startswith(HARNESS_MARK)
    if foreign:
        msg = (
            f"probe_isolation() writes a scratch table, and {safe_url(url)!r} is a database harness did not create, "
            "so harness will not write to it. Probe the engine of a harness.TestDatabase (or a new SQLite file)."
        )
        raise UnsafeDatabaseError(msg)


def _foreign_sqlite_file(path: Path) -> bool:
    """A SQLite file with data in it and no harness marker beside it."""
    return path.is_file() and path.stat().st_size > 0 and not path.with_name(path.name + ".harness").exists()
