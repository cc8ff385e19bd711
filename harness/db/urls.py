"""Database URLs: the async driver for each backend, and the check that a URL names a test database."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from harness.exceptions import DatabaseConfigError, UnsafeDatabaseError
from harness.network import is_loopback_ip

__all__ = [
    "DEFAULT_URL",
    "HARNESS_MARK",
    "TEST_PREFIX",
    "check_test_database",
    "database_key",
    "is_memory",
    "normalize_url",
    "safe_url",
]

DEFAULT_URL = "sqlite+aiosqlite://"
TEST_PREFIX = "test_"
HARNESS_MARK = "created by harness for tests"  # PostgreSQL's database comment, SQLite's marker file
# Each backend's async drivers, the default first.
_DRIVERS = {"sqlite": ("aiosqlite",), "postgresql": ("asyncpg", "psycopg")}
_DRIVER_PACKAGES = {
    "aiosqlite": "aiosqlite",
    "asyncpg": "pytest-async-harness[postgres]",
    "psycopg": "pytest-async-harness[psycopg]",
}
_BACKEND_ALIASES = {"postgres": "postgresql", "pgsql": "postgresql"}
_MEMORY_NAMES = {None, "", ":memory:"}
_USER_PASSWORD = re.compile(r"(?P<user>://[^:/@]*:)[^/?#]*@")  # to the authority's last @
# URL query keys and connect_args that would choose another database or server than the URL names.
_REDIRECTING_KEYS = ("database", "dbname", "dsn", "db", "user_database")


def normalize_url(url: str | URL | None) -> URL:
    """Return ``url`` as an async SQLAlchemy URL, choosing the async driver when none is named.

    ``sqlite://`` becomes ``sqlite+aiosqlite://`` and ``postgresql://`` (or ``postgres://``)
    becomes ``postgresql+asyncpg://`` (``postgresql+psycopg://`` where only psycopg 3 is installed).
    ``None`` means the embedded default, in-memory SQLite.
    Raises `DatabaseConfigError` for schemes and drivers harness does not support, and when the
    driver is not installed.
    """
    raw = DEFAULT_URL if url is None else url
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        problem = "its port is not a number" if isinstance(exc, ValueError) else "it cannot be read as one"
        msg = (
            f"{hide_password(str(raw))!r} is not a database URL: {problem}. Use a URL such as "
            "'sqlite+aiosqlite:///test_app.db' or 'postgresql+asyncpg://user:password@127.0.0.1:5432/app'."
        )
        raise DatabaseConfigError(msg) from None  # the cause would print the URL, password and all
    if "@" in (
        parsed.host or ""
    ):  # "user:p@ss@host": the password's own @ split it; its tail became the host
        msg = (
            "The database URL's user or password contains '@': percent-encode it as %40 "
            "(user:p%40ss@host), or the part after it is read as the host."
        )
        raise DatabaseConfigError(msg)
    backend = _BACKEND_ALIASES.get(parsed.get_backend_name(), parsed.get_backend_name())
    if backend not in _DRIVERS:
        msg = f"Unsupported database URL scheme {parsed.drivername!r}. harness supports {_supported()}."
        raise DatabaseConfigError(msg)
    if "+" in parsed.drivername:
        driver = parsed.get_driver_name()
        if driver == "psycopg_async":  # SQLAlchemy's own name for psycopg's async side
            driver = "psycopg"
        if driver not in _DRIVERS[backend]:
            msg = (
                f"Unsupported driver {driver!r} for {backend}: harness tests run on SQLAlchemy asyncio, "
                f"with {_supported(backend, last='or')}. Use one of those in the URL."
            )
            raise DatabaseConfigError(msg)
        _require_driver(driver)
    else:  # the default driver, or the other one when only that one is installed
        # The first that imports: importing psycopg only to pass it over would cost 0.4 s per process.
        driver = next((name for name in _DRIVERS[backend] if _installed(name)), _DRIVERS[backend][0])
        _require_driver(driver)
    return parsed.set(drivername=f"{backend}+{driver}")


def _supported(backend: str | None = None, *, last: str = "and") -> str:
    names = [
        f"'{each}+{driver}'" for each in ([backend] if backend else _DRIVERS) for driver in _DRIVERS[each]
    ]
    return f"{', '.join(names[:-1])} {last} {names[-1]}" if len(names) > 1 else names[0]


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _require_driver(module: str) -> None:
    if not _installed(module):
        msg = f"The {module!r} driver is not installed. Install it with: pip install '{_DRIVER_PACKAGES[module]}'"
        raise DatabaseConfigError(msg)


def hide_password(text: str) -> str:
    """``text`` (a URL, even one that cannot be parsed) with the password of its user part masked."""
    return _USER_PASSWORD.sub(r"\g<user>***@", text)


def safe_url(url: URL) -> str:
    """``url`` as text with its password hidden, for messages."""
    return url.render_as_string(hide_password=True)


def database_key(url: URL) -> tuple[str, str, int | None, str]:
    """What tells one database from another: backend, host, port and database (a SQLite file's path)."""
    if url.get_backend_name() == "sqlite":
        database = str(url.database or "")
        return ("sqlite", "", None, str(Path(database).resolve()) if database else "")
    return (
        url.get_backend_name(),
        (url.host or "localhost").lower(),
        url.port or 5432,
        str(url.database or ""),
    )


def is_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database."""
    if url.get_backend_name() != "sqlite":
        return False
    uri = str(url.query.get("uri", "")).lower() in {"true", "1"}
    return url.database in _MEMORY_NAMES or (uri and url.query.get("mode") == "memory")


def _is_loopback(host: str) -> bool:
    # Stricter than the network guard on names: a database host is `localhost` or an address.
    return (
        host == "localhost" or host.startswith("/") or is_loopback_ip(host)
    )  # "/…": a Unix socket directory


def check_test_database(url: str | URL, *, allow_remote: bool = False) -> URL:
    """Refuse any database that harness must not write to; return the normalized URL.

    A test database is an in-memory SQLite database, a SQLite file whose name starts with
    ``test_``, or a PostgreSQL database whose name starts with ``test_`` on a loopback address.
    ``allow_remote=True`` is the explicit opt-in for a server on another host.
    """
    parsed = normalize_url(url)
    refuse_redirects(dict(parsed.query), "URL query")
    if parsed.get_backend_name() == "sqlite":
        if not is_memory(parsed) and not Path(str(parsed.database)).name.startswith(TEST_PREFIX):
            msg = (
                f"Refusing to use SQLite file {parsed.database!r}: harness only writes to databases it created for tests, "
                f"whose file name starts with {TEST_PREFIX!r}. Use ':memory:', a file such as 'test_app.db', "
                "or let harness.TestDatabase create one."
            )
            raise UnsafeDatabaseError(msg)
        return parsed
    if not str(parsed.database or "").startswith(TEST_PREFIX):
        msg = (
            f"Refusing to use database {parsed.database!r}: harness only writes to databases it created for tests, "
            f"whose name starts with {TEST_PREFIX!r}. Pass the server URL to harness.TestDatabase "
            f"(or the harness_database_url setting), which creates and owns '{TEST_PREFIX}{parsed.database or 'harness'}'."
        )
        raise UnsafeDatabaseError(msg)
    host = parsed.host or parsed.query.get("host") or os.environ.get("PGHOST") or "localhost"
    hosts = [host] if isinstance(host, str) else list(host)
    remote = [h for h in hosts if not _is_loopback(h)]
    if remote and not allow_remote:
        msg = (
            f"Refusing to use database server {remote[0]!r}: it is not a loopback address, and tests should not "
            "reach a shared server by accident. If this server is really a throwaway test server, opt in with "
            "allow_remote=True (harness_allow_remote_database = true in the pytest configuration)."
        )
        raise UnsafeDatabaseError(msg)
    return parsed


def refuse_redirects(arguments: dict[str, Any], where: str) -> None:
    """Refuse URL query keys or connect_args that would point the driver at another database."""
    redirecting = sorted(key for key in arguments if key in _REDIRECTING_KEYS)
    if redirecting:
        msg = (
            f"Refusing {where} option {redirecting[0]!r}: it would connect to another database than the URL names, "
            "past harness's test-database check. Put the database name in the URL's path."
        )
        raise UnsafeDatabaseError(msg)
