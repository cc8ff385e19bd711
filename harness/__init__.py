"""Async integration-test harness: test databases, factories, frozen clocks and budgets for SQLAlchemy asyncio."""

from __future__ import annotations

from importlib.metadata import version

from harness.clock import Clock, freeze_time
from harness.databases import TestDatabase
from harness.db import (
    RollbackScope,
    bind_sessions,
    check_test_database,
    create_test_engine,
    probe_isolation,
    rollback_scope,
)
from harness.exceptions import (
    ClockError,
    ConcurrentSessionError,
    DatabaseConfigError,
    DatabaseUnavailableError,
    FactoryError,
    HarnessError,
    IsolationError,
    IsolationProbeError,
    SchemaError,
    ScopeError,
    TimingError,
    UnsafeDatabaseError,
)
from harness.factories import Creation, ModelFactory, use_session
from harness.plugin import register_factory
from harness.queries import (
    CapturedQuery,
    QueryLog,
    assert_max_queries,
    assert_no_n_plus_one,
    assert_num_queries,
    capture_queries,
)
from harness.timing import Timing, assert_completes_within, assert_not_slower_than, measure

__version__ = version("harness")

__all__ = [  # membership is pinned by tests/test_public_api.py
    "CapturedQuery",
    "Clock",
    "ClockError",
    "ConcurrentSessionError",
    "Creation",
    "DatabaseConfigError",
    "DatabaseUnavailableError",
    "FactoryError",
    "HarnessError",
    "IsolationError",
    "IsolationProbeError",
    "ModelFactory",
    "QueryLog",
    "RollbackScope",
    "SchemaError",
    "ScopeError",
    "TestDatabase",
    "Timing",
    "TimingError",
    "UnsafeDatabaseError",
    "__version__",
    "assert_completes_within",
    "assert_max_queries",
    "assert_no_n_plus_one",
    "assert_not_slower_than",
    "assert_num_queries",
    "bind_sessions",
    "capture_queries",
    "check_test_database",
    "create_test_engine",
    "freeze_time",
    "measure",
    "probe_isolation",
    "register_factory",
    "rollback_scope",
    "use_session",
]
