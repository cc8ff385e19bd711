"""Test databases, engines and the scopes that isolate each test, for SQLAlchemy asyncio.

One module per concern; a URL or a connection walks down this list, never up:

- `harness.db.testdb`: `TestDatabase`, the database harness creates, fills and drops.
- `harness.db.seed`: seed data, committed once with the schema and loaded fresh by each test.
- `harness.db.access`: `block_databases`, which refuses connections to any other database.
- `harness.db.adoption`: `adopt_engines` and `bind_sessions`: the app's engines and sessionmakers
  pointed at the test database.
- `harness.db.probe`: `probe_isolation`, the start-up check that rollbacks hold.
- `harness.db.commits`: `commit_scope`, real commits and the clean-up after them.
- `harness.db.scopes`: `rollback_scope`, the test's transaction and the guards that keep code in it.
- `harness.db.engines`: `create_test_engine`, its driver fixes and the guards on its dialect.
- `harness.db.loops`: pooled connections closed when their event loop ends.
- `harness.db.joining`: the connection code gets inside a scope, whose transactions are savepoints.
- `harness.db.drivers`: what differs between asyncpg and psycopg: timeouts, settings, aborting.
- `harness.db.urls`: URLs, drivers, and the check that a URL names a test database.
"""

from __future__ import annotations

from harness.db.access import DatabaseGuard, block_databases, record_engine_sites, stop_recording_engine_sites
from harness.db.adoption import EngineAdoption, adopt_engines, bind_sessions, resolve_engine
from harness.db.commits import CommitScope, commit_scope
from harness.db.engines import create_test_engine
from harness.db.probe import probe_isolation
from harness.db.scopes import RollbackScope, current_session, rollback_scope
from harness.db.seed import Seeded, SeedFunction, load_seeded
from harness.db.testdb import Schema, TestDatabase
from harness.db.urls import check_test_database, normalize_url

__all__ = [
    "CommitScope",
    "DatabaseGuard",
    "EngineAdoption",
    "RollbackScope",
    "Schema",
    "SeedFunction",
    "Seeded",
    "TestDatabase",
    "adopt_engines",
    "bind_sessions",
    "block_databases",
    "check_test_database",
    "commit_scope",
    "create_test_engine",
    "current_session",
    "load_seeded",
    "normalize_url",
    "probe_isolation",
    "record_engine_sites",
    "resolve_engine",
    "rollback_scope",
    "stop_recording_engine_sites",
]
