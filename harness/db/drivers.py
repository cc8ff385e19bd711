"""What differs between PostgreSQL's async drivers, asyncpg and psycopg 3: how a connection is given
its timeouts and server settings, and how it is aborted.

asyncpg takes ``timeout``, ``command_timeout`` and a ``server_settings`` dict; psycopg takes libpq's
``connect_timeout`` and ``options`` (``-c name=value`` words), and has no command timeout of its
own: harness gives its connections one, so that on either driver a server that froze fails the
statement with a ``TimeoutError`` instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from typing import Any

__all__ = ["postgres_connect_args", "server_settings", "terminate"]

_OPTION = re.compile(r"-c\s*([\w.]+)=((?:\\ |\S)+)")  # libpq escapes a space in a value as "\ "


def server_settings(driver: str, connect_args: dict[str, Any]) -> dict[str, str]:
    """The server settings ``connect_args`` set, in either driver's spelling: asyncpg's
    ``server_settings``, or psycopg's ``options`` (``-c name=value``) and ``application_name``."""
    if driver == "psycopg":
        options = str(connect_args.get("options", ""))
        found = {name: value.replace("\\ ", " ") for name, value in _OPTION.findall(options)}
        if "application_name" in connect_args:
            found["application_name"] = str(connect_args["application_name"])
        return found
    return {name: str(value) for name, value in connect_args.get("server_settings", {}).items()}


def postgres_connect_args(
    driver: str,
    connect_args: dict[str, Any],
    *,
    connect_timeout: float,
    settings: dict[str, str] | None = None,
    command_timeout: float | None = None,
) -> dict[str, Any]:
    """``connect_args`` for ``driver`` with a connect timeout and the server ``settings`` (which
    replace those ``connect_args`` set: merge them first with `server_settings`). The caller's
    timeouts win. ``command_timeout`` is the client's limit on one wait for the server: asyncpg's
    own, and harness's on psycopg (`_connect_timed`)."""
    arguments = dict(connect_args)
    if driver == "psycopg":
        arguments.pop("options", None)
        arguments.pop("application_name", None)
        arguments.setdefault("connect_timeout", max(1, round(connect_timeout)))  # libpq: whole seconds
        if command_timeout is not None:
            arguments.setdefault("async_creator_fn", functools.partial(_connect_timed, command_timeout))
        if settings:
            arguments["options"] = " ".join(
                f"-c {name}={value.replace(' ', chr(92) + ' ')}" for name, value in settings.items()
            )
        return arguments
    arguments.pop("server_settings", None)
    arguments.setdefault("timeout", connect_timeout)
    if command_timeout is not None:
        arguments.setdefault("command_timeout", command_timeout)
    if settings:
        arguments["server_settings"] = dict(settings)
    return arguments


def terminate(driver_connection: Any) -> None:
    """Abort ``driver_connection``'s socket without a word to the server (which may not answer)."""
    with contextlib.suppress(Exception):  # already closed, or nothing to abort
        if hasattr(driver_connection, "terminate"):  # asyncpg
            driver_connection.terminate()
        else:  # psycopg: closing the socket sends nothing the server must answer
            driver_connection.pgconn.finish()


async def _connect_timed(command_timeout: float, *args: Any, **kwargs: Any) -> Any:
    """A psycopg connection whose every wait on the server ends after ``command_timeout`` s: the
    connection is aborted and the statement fails with ``TimeoutError``."""
    connection = await _timed_connection_class().connect(*args, **kwargs)
    connection.command_timeout = command_timeout
    return connection


@functools.cache
def _timed_connection_class() -> type[Any]:
    import psycopg

    class TimedConnection(psycopg.AsyncConnection[Any]):
        command_timeout: float | None = None

        async def wait(self, *args: Any, **kwargs: Any) -> Any:
            # Every statement, commit and rollback waits here (so does notifies(): a LISTEN that
            # waits longer is cut too). Aborting the connection wakes the wait (psycopg polls it
            # every 0.1 s) with an error, which becomes the timeout.
            if self.command_timeout is None:
                return await super().wait(*args, **kwargs)
            timed_out = False

            def abort() -> None:
                nonlocal timed_out
                timed_out = True
                self.pgconn.finish()

            timer = asyncio.get_running_loop().call_later(self.command_timeout, abort)
            try:
                return await super().wait(*args, **kwargs)
            except psycopg.OperationalError as exc:
                if timed_out:
                    msg = f"no answer from the server within {self.command_timeout:g} s"
                    raise TimeoutError(msg) from exc
                raise
            finally:
                timer.cancel()

    return TimedConnection
