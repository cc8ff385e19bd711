"""Async integration-test harness: test databases, factories, frozen clocks and budgets for SQLAlchemy asyncio."""

from __future__ import annotations

from importlib.metadata import version

from harness import webhooks as webhooks  # the signers: harness.webhooks.stripe(...)
from harness.apis import MockApi, MockRoute, RecordedCall, Reply, endpoint
from harness.client import AppClient, AppLifespan, AppResponse, app_client, auth_headers
from harness.clock import Clock, freeze_time
from harness.db import (
    CommitScope,
    DatabaseGuard,
    EngineAdoption,
    RollbackScope,
    Seeded,
    TestDatabase,
    adopt_engines,
    bind_sessions,
    block_databases,
    check_test_database,
    commit_scope,
    create_test_engine,
    probe_isolation,
    rollback_scope,
)
from harness.exceptions import (
    AppError,
    ClockError,
    ConcurrentSessionError,
    DatabaseBlockedError,
    DatabaseConfigError,
    DatabaseUnavailableError,
    FactoryError,
    HarnessError,
    IsolationError,
    IsolationProbeError,
    LifespanError,
    MigrationError,
    MockApiError,
    NetworkBlockedError,
    RouteNotCalledError,
    SchemaError,
    ScopeError,
    TimingError,
    TimingUndecidedWarning,
    TimingWarning,
    UnmatchedRequestError,
    UnsafeDatabaseError,
    WebhookError,
)
from harness.factories import Creation, ModelFactory, use_session
from harness.migrations import AlembicMigrations
from harness.network import NetworkGuard, block_network
from harness.plugin import register_api, register_factory
from harness.queries import (
    CapturedQuery,
    QueryLog,
    assert_max_queries,
    assert_no_n_plus_one,
    assert_num_queries,
    capture_queries,
)
from harness.testcase import IntegrationTest, RealCommitsTest
from harness.timing import (
    Timing,
    assert_completes_within,
    assert_not_slower_than,
    assert_runs_within,
    measure,
)
from harness.webhooks import SignedWebhook

__version__ = version("pytest-async-harness")

__all__ = [  # membership is pinned by tests/test_public_api.py
    "AlembicMigrations",
    "AppClient",
    "AppError",
    "AppLifespan",
    "AppResponse",
    "CapturedQuery",
    "Clock",
    "ClockError",
    "CommitScope",
    "ConcurrentSessionError",
    "Creation",
    "DatabaseBlockedError",
    "DatabaseConfigError",
    "DatabaseGuard",
    "DatabaseUnavailableError",
    "EngineAdoption",
    "FactoryError",
    "HarnessError",
    "IntegrationTest",
    "IsolationError",
    "IsolationProbeError",
    "LifespanError",
    "MigrationError",
    "MockApi",
    "MockApiError",
    "MockRoute",
    "ModelFactory",
    "NetworkBlockedError",
    "NetworkGuard",
    "QueryLog",
    "RealCommitsTest",
    "RecordedCall",
    "Reply",
    "RollbackScope",
    "RouteNotCalledError",
    "SchemaError",
    "ScopeError",
    "Seeded",
    "SignedWebhook",
    "TestDatabase",
    "Timing",
    "TimingError",
    "TimingUndecidedWarning",
    "TimingWarning",
    "UnmatchedRequestError",
    "UnsafeDatabaseError",
    "WebhookError",
    "__version__",
    "adopt_engines",
    "app_client",
    "assert_completes_within",
    "assert_max_queries",
    "assert_no_n_plus_one",
    "assert_not_slower_than",
    "assert_num_queries",
    "assert_runs_within",
    "auth_headers",
    "bind_sessions",
    "block_databases",
    "block_network",
    "capture_queries",
    "check_test_database",
    "commit_scope",
    "create_test_engine",
    "endpoint",
    "freeze_time",
    "measure",
    "probe_isolation",
    "register_api",
    "register_factory",
    "rollback_scope",
    "use_session",
]
