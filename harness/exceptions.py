"""Exceptions raised by harness.

HarnessError
├── DatabaseConfigError (also ValueError)  bad URL, missing driver, unknown option
│   └── UnsafeDatabaseError                not a test database, or not on loopback
├── DatabaseUnavailableError               the server cannot be reached
├── SchemaError                            the schema callable (or create_all) failed
├── ScopeError                             a rollback scope used after it ended
├── FactoryError                           a factory cannot create what it was asked to
├── ClockError                             a time that cannot be read, a clock used wrongly
├── TimingError                            a timing helper used wrongly (budgets fail as AssertionError)
└── IsolationError                         code under test escaped the test transaction
    ├── ConcurrentSessionError             sessions overlapped on the shared test connection
    └── IsolationProbeError                the driver leaks committed rows past a rollback
"""

from __future__ import annotations

__all__ = [
    "ClockError",
    "ConcurrentSessionError",
    "DatabaseConfigError",
    "DatabaseUnavailableError",
    "FactoryError",
    "HarnessError",
    "IsolationError",
    "IsolationProbeError",
    "SchemaError",
    "ScopeError",
    "TimingError",
    "UnsafeDatabaseError",
]


class HarnessError(Exception):
    """Base class of every error harness raises on purpose."""


class DatabaseConfigError(HarnessError, ValueError):
    """The database configuration cannot work: unknown URL scheme, missing driver, bad option."""


class UnsafeDatabaseError(DatabaseConfigError):
    """harness refuses a database it did not create for tests, or a server that is not on loopback."""


class DatabaseUnavailableError(HarnessError):
    """The database server cannot be reached."""


class SchemaError(HarnessError):
    """Building the test schema failed."""


class ScopeError(HarnessError):
    """A rollback scope (or its session) was used outside its lifetime."""


class FactoryError(HarnessError):
    """A factory cannot create what it was asked to: no session, a bad declaration, a refused row."""


class ClockError(HarnessError):
    """A time or zone that cannot be read, or a clock used out of turn (see harness.clock)."""


class TimingError(HarnessError):
    """A timing helper was used wrongly: bad repeat counts, an unknown statistic, a bad slack factor."""


class IsolationError(HarnessError):
    """Code under test did something that would make a test's writes permanent."""


class ConcurrentSessionError(IsolationError):
    """Two sessions used the shared test connection in overlapping transactions."""


class IsolationProbeError(IsolationError):
    """The start-up probe saw a committed row survive the rollback of its scope."""
