"""Async integration-test harness: databases, factories, API mocks, clocks and timing."""

from __future__ import annotations

from harness.db import RollbackScope, bind_sessions, create_test_engine, probe_isolation, rollback_scope
from harness.exceptions import HarnessError

__all__ = [
    "HarnessError",
    "RollbackScope",
    "bind_sessions",
    "create_test_engine",
    "probe_isolation",
    "rollback_scope",
]
