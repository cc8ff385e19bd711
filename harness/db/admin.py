"""Connections to a PostgreSQL server's maintenance database, which create and drop test databases,
and the words for a server that refused, broke or stopped answering."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from harness.db.drivers import postgres_connect_args
from harness.db.engines import trust
from harness.db.urls import TEST_PREFIX, check_test_database
from harness.exceptions import DatabaseUnavailableError

# lost_connection is for users (see the API page); the rest is harness's own plumbing.
__all__ = ["lost_connection"]

CONNECT_TIMEOUT = 10  # seconds


class AdminConnection:
    """An AUTOCOMMIT connection to the server's maintenance database, for CREATE/DROP DATABASE."""

    def __init__(self, server_url: URL, allow_remote: bool) -> None:
        # The maintenance database is only read; check_test_database vets the host.
        check_test_database(server_url.set(database=TEST_PREFIX + "admin"), allow_remote=allow_remote)
        self.url = server_url.set(database="postgres")
        self.engine = create_async_engine(
            self.url,
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args=postgres_connect_args(
                self.url.get_driver_name(), {}, connect_timeout=CONNECT_TIMEOUT
            ),
        )
        trust(self.engine)
        self.connection: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        try:
            self.connection = await self.engine.connect()
        except Exception as exc:  # OSError, TimeoutError, DBAPIError; a raw asyncpg error on older SQLAlchemy
            await self.engine.dispose()
            where = server_address(self.url)
            refusal = _refusal(exc)
            if refusal is not None:  # the server is up, and said no
                said, about_the_role = refusal
                advice = (
                    f"Check the user and password in the URL ({self.url.render_as_string(hide_password=True)}): "
                    "harness needs a role that may create databases."
                    if about_the_role
                    else "Fix what the server says, then run again."
                )
                msg = f"The PostgreSQL server at {where} refused the connection: {said}. {advice}"
                raise DatabaseUnavailableError(msg) from exc
            what = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer within {CONNECT_TIMEOUT} s"
            msg = (
                f"Cannot connect to the PostgreSQL server at {where} ({what}). "
                "Is the server running and is the URL right? For a throwaway local server run pytest with "
                "--harness-start-postgres (or `python -m harness.postgres start`), or start PostgreSQL your usual way."
            )
            raise DatabaseUnavailableError(msg) from exc
        return self.connection

    async def __aexit__(self, *exc_info: object) -> None:
        if self.connection is not None:
            await self.connection.close()
        await self.engine.dispose()


def _refusal(exc: BaseException) -> tuple[str, bool] | None:
    """What the server said when it refused a connection, and whether it was about the role (a
    wrong user or password, pg_hba.conf); None when it never answered."""
    orig = getattr(exc, "orig", exc)
    sqlstate = str(getattr(orig, "sqlstate", None) or "")
    if sqlstate:  # asyncpg
        return server_message(exc), sqlstate.startswith("28")  # 28: invalid authorization
    text = str(orig)  # psycopg keeps libpq's words only: "… failed: FATAL:  role "x" does not exist"
    if "FATAL:" in text:
        said = text.split("FATAL:", 1)[1].strip().splitlines()[0]
        return said, any(word in said for word in ("role", "password", "pg_hba", "authentication"))
    if "fe_sendauth: no password supplied" in text:
        return "it asks for a password and the URL gives none", True
    return None


def server_address(url: URL) -> str:
    """Where a PostgreSQL URL connects: host and port, or the Unix socket file."""
    host = url.host or url.query.get("host") or os.environ.get("PGHOST") or "localhost"
    host = host if isinstance(host, str) else ",".join(host)
    port = url.port or url.query.get("port") or os.environ.get("PGPORT") or 5432
    return f"the Unix socket {host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


_LOST = (
    "connection was closed",
    "connection is closed",
    "terminating connection",
    "server closed the connection",
    # psycopg's (libpq's) words, where asyncpg raises OSError or TimeoutError
    "Connection refused",
    "connection timeout expired",
    "connection socket closed",
    "the connection is lost",
    "could not receive data from server",
    "no connection to the server",
)


def lost_connection(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says a database connection broke or got no answer: a
    refused or reset socket, a timeout, a connection SQLAlchemy invalidated, a closed connection."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        each = stack.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        if isinstance(each, OSError | TimeoutError) or any(text in str(each) for text in _LOST):
            return True  # ConnectionError and socket errors are OSErrors
        if isinstance(each, DBAPIError) and each.connection_invalidated:
            return True
        stack += [each.__cause__, each.__context__, getattr(each, "orig", None)]
    return False


def server_message(exc: BaseException) -> str:
    """The first line of what the server (or driver) said in ``exc``, without the driver's prefix."""
    orig = getattr(exc, "orig", exc)
    return str(orig).splitlines()[0].split(": ", 1)[-1] if str(orig) else type(orig).__name__
