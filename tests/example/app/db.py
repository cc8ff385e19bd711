"""The database: one engine, built at import time from the settings, as in most FastAPI projects.

Tests never reach this database: harness adopts `engine` (``harness_engines = app.db:engine`` in
pytest.ini), so it works on harness's test database and each test's writes are rolled back.
"""

from __future__ import annotations

import os

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

DATABASE_URL = os.environ.get("CAMPAIGNS_DATABASE_URL", "sqlite+aiosqlite:///./campaigns.db")

engine = create_async_engine(DATABASE_URL)
SessionLocal: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)
