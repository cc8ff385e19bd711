"""Exceptions raised by harness.

HarnessError
├── DatabaseConfigError (also ValueError)  bad URL, missing driver, unknown option
│   └── UnsafeDatabaseError                not a test database, or not on loopback
├── DatabaseUnavailableError               the server cannot be reached
├── SchemaError                            the schema callable (or create_all) failed
│   └── MigrationError                     an Alembic migration failed, or differs from the models
├── ScopeError                             a rollback scope used after it ended
├── FactoryError                           a factory cannot create what it was asked to
├── ClockError                             a time that cannot be read, a clock used wrongly
├── TimingError                            a timing helper used wrongly (budgets fail as AssertionError)
├── MockApiError (also ValueError)         a mock API or reply declared wrongly: a route twice, a bad Retry-After
├── UnmatchedRequestError (AssertionError) a request that no declared route of the active mock APIs answers
├── RouteNotCalledError (AssertionError)   a required route of a mock API that the test never called
├── NetworkBlockedError                    a connection to a host that is not loopback while the guard is on
├── DatabaseBlockedError                   a connection to a database harness did not create while the guard is on
├── WebhookError (also ValueError)         a webhook that cannot be signed: a bad secret, a bad payload
├── AppError (also TypeError)              an app the app client cannot serve: not ASGI
│   └── LifespanError                      the app's lifespan start-up or shut-down failed
└── IsolationError                         code under test escaped the test transaction
    ├── ConcurrentSessionError             sessions overlapped on the shared test connection
    └── IsolationProbeError                the driver leaks committed rows past a rollback

TimingWarning (UserWarning)                a baseline that does other work than the code it is compared with
└── TimingUndecidedWarning                 a timing assertion passed undecided: the machine was too noisy
"""

from __future__ import annotations

from respx.models import AllMockedAssertionError

__all__ = [
    "AppError",
    "ClockError",
    "ConcurrentSessionError",
    "DatabaseBlockedError",
    "DatabaseConfigError",
    "DatabaseUnavailableError",
    "FactoryError",
    "HarnessError",
    "IsolationError",
    "IsolationProbeError",
    "LifespanError",
    "MigrationError",
    "MockApiError",
    "NetworkBlockedError",
    "RouteNotCalledError",
    "SchemaError",
    "ScopeError",
    "TimingError",
    "TimingUndecidedWarning",
    "TimingWarning",
    "UnmatchedRequestError",
    "UnsafeDatabaseError",
    "WebhookError",
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


class MigrationError(SchemaError):
    """Alembic migrations that cannot run, fail, or build a database other than the models describe."""


class ScopeError(HarnessError):
    """A rollback scope (or its session) was used outside its lifetime."""


class FactoryError(HarnessError):
    """A factory cannot create what it was asked to: no session, a bad declaration, a refused row."""


class ClockError(HarnessError):
    """A time or zone that cannot be read, or a clock used out of turn (see harness.clock)."""


class TimingError(HarnessError):
    """A timing helper was used wrongly: bad repeat counts, an unknown statistic, a bad slack factor."""


class TimingWarning(UserWarning):
    """A timing assertion that may not measure what it means to: a baseline doing other work."""


class TimingUndecidedWarning(TimingWarning):
    """A timing assertion that passed because the machine was too noisy to tell (see $HARNESS_TIMING_UNDECIDED)."""


class MockApiError(HarnessError, ValueError):
    """A mock API, route or reply declared wrongly: a route declared twice, an invalid Retry-After."""


class UnmatchedRequestError(HarnessError, AllMockedAssertionError):
    """An HTTP request that no route of the active mock APIs answers (or a route asked once too often).

    An ``AssertionError`` (through respx's ``AllMockedAssertionError``), so respx hands the request to
    the next router before giving up, and a test that swallows it still fails at teardown.
    """


class RouteNotCalledError(HarnessError, AssertionError):
    """A required route of a mock API was not called (as often as declared) by the end of the test."""


class NetworkBlockedError(HarnessError):
    """Code under test tried to reach a host that is not loopback while the network guard was on.

    Not an ``OSError`` on purpose: retry loops that catch connection errors must not swallow it.
    """


class DatabaseBlockedError(HarnessError):
    """Code under test tried to reach a database harness did not create while the database guard was on.

    Not a driver error on purpose: code that catches database errors to retry must not swallow it.
    """


class WebhookError(HarnessError, ValueError):
    """A webhook cannot be signed: a secret in the wrong format, a payload that is not bytes or JSON."""


class AppError(HarnessError, TypeError):
    """The app client cannot serve this app: it is not an ASGI application."""


class LifespanError(AppError):
    """The app's lifespan start-up failed (or did not finish in time), or its shut-down failed."""


class IsolationError(HarnessError):
    """Code under test did something that would make a test's writes permanent."""


class ConcurrentSessionError(IsolationError):
    """Two sessions used the shared test connection in overlapping transactions."""


class IsolationProbeError(IsolationError):
    """The start-up probe saw a committed row survive the rollback of its scope."""
