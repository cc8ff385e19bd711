"""The migrations build what the models describe, and go down to nothing and up again."""

from __future__ import annotations

from app.models import Base
from harness import AlembicMigrations


def test_the_migrations_match_the_models(
    harness_schema: AlembicMigrations, harness_database_url: str | None
) -> None:
    harness_schema.check(Base.metadata, url=harness_database_url)
