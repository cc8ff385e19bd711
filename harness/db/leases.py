"""Leases on test databases: which ones a live run holds, and the clean-up of what killed runs left.

A run holds a lease on each test database from before it creates it until it has dropped it: on
PostgreSQL a session advisory lock on a connection of its own, on SQLite a lock on a file beside
the database file. The kernel or the server ends a lease when the process that held it ends (a
machine that vanished from the network, only once the server gives up on its connection), so a
harness database that nobody holds is one a killed run left behind; `left_behind` lists them and
drops them on request. A database a lease holds, or one with connections open to it, is never
dropped. Leases need a direct connection to PostgreSQL: a pooler in transaction mode (pgbouncer)
does not keep session advisory locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from harness.db.admin import CONNECT_TIMEOUT, AdminConnection, server_message
from harness.db.urls import HARNESS_MARK, normalize_url
from harness.exceptions import DatabaseConfigError, DatabaseUnavailableError, UnsafeDatabaseError

try:
    import fcntl

    FILE_LOCKS = True
except ImportError:  # Windows: no leases on SQLite files, and none is ever taken for stale
    FILE_LOCKS = False

# Leases use PostgreSQL's two-key advisory locks, a key space apart from the one-key locks that
# guard a template while it is built or cloned.
_LEASE_KEY = 0x68726E73  # "hrns"
_TRY_LEASE = "SELECT pg_try_advisory_lock(:key, hashtext(:name))"
_END_LEASE = "SELECT pg_advisory_unlock(:key, hashtext(:name))"


class ServerLease:
    """A lease on a PostgreSQL test database: an advisory lock held, until `release`, on a
    connection that a helper thread keeps open on an event loop of its own (so the lease outlives
    the event loops of the tests)."""

    _error: BaseException | None = None  # why the lease could not be taken

    def __init__(self, server_url: URL, name: str, *, allow_remote: bool) -> None:
        self.name = name
        self._admin = AdminConnection(server_url, allow_remote)
        self._held = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._hold(),), name=f"harness-lease-{name}"
        )
        self._thread.daemon = True  # a run that never releases it: the server ends it with the process
        self._thread.start()
        if not self._held.wait(timeout=CONNECT_TIMEOUT + 20):
            msg = f"The PostgreSQL server did not answer harness's lease on test database {name!r} within {CONNECT_TIMEOUT + 20} s."
            raise DatabaseUnavailableError(msg)
        if self._error is not None:
            self._thread.join()
            raise self._error

    async def _hold(self) -> None:
        self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with self._admin as admin:
                if not await admin.scalar(text(_TRY_LEASE), {"key": _LEASE_KEY, "name": self.name}):
                    raise _in_use(self.name)
                self._held.set()
                await self._release.wait()
        except BaseException as exc:  # DatabaseUnavailableError or a broken connection
            self._error = exc
        finally:
            self._held.set()

    def release(self) -> None:
        """End the lease (closing its connection); a lease that already ended stays ended."""
        if self._loop is not None and self._release is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: the connection broke
                self._loop.call_soon_threadsafe(self._release.set)
            self._thread.join(timeout=10)


class FileLease:
    """A lease on a SQLite test file: an exclusive lock on ``<file>.lease`` beside it (found by
    every process, whatever its temporary directory), held until `release`."""

    def __init__(self, path: Path) -> None:
        self.path = lease_file(path)
        self._handle: IO[str] | None = None
        if FILE_LOCKS:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a")
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._handle.close()
                raise _in_use(path.name) from None

    def release(self) -> None:
        """End the lease; a lease that already ended stays ended."""
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            self._handle.close()  # closing the file ends the lock
            self._handle = None


def lease_file(path: Path) -> Path:
    """The lease file of the SQLite test file at ``path``."""
    return path.with_name(path.name + ".lease")


def _in_use(name: str) -> DatabaseConfigError:
    return DatabaseConfigError(
        f"Test database {name!r} is held by another process right now: two TestDatabase objects got the same "
        "name and run id. Under pytest-xdist give each worker its own "
        "(TestDatabase(..., worker=os.environ.get('PYTEST_XDIST_WORKER'))), or a run_id of its own."
    )


def lock_file(path: Path) -> Path:
    """Where the lock that guards building and copying the SQLite template at ``path`` lives: the
    temporary directory, not beside the user's files."""
    locks = Path(tempfile.gettempdir()) / "harness-locks"
    locks.mkdir(exist_ok=True)
    return locks / f"{path.name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}.lock"


@contextlib.asynccontextmanager
async def file_lock(lock: Path) -> AsyncIterator[None]:
    """An exclusive lock between processes (xdist workers, runs); waits without blocking the event loop."""
    with lock.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class LeftDatabase:
    """A database harness created, as `left_behind` found it."""

    name: str
    state: str  # "in use", "left by a run that ended", "template", "dropped", or why it was skipped


async def left_behind(
    url: str | URL,
    *,
    drop: bool = False,
    templates: bool = False,
    allow_remote: bool = False,
) -> list[LeftDatabase]:
    """harness's databases on the PostgreSQL server at ``url``, with who holds each.

    With ``drop``, those no live run holds are dropped (and templates too, with ``templates``:
    the next run rebuilds them). Databases harness did not create are not listed, nor touched.
    """
    found = []
    async with AdminConnection(normalize_url(url), allow_remote) as admin:
        rows = await admin.execute(
            text(
                "SELECT datname FROM pg_database WHERE starts_with(shobj_description(oid, 'pg_database'), :mark) "
                "ORDER BY datname"
            ),
            {"mark": HARNESS_MARK},
        )
        for name in rows.scalars().all():
            found.append(LeftDatabase(name, await _state(admin, name, drop=drop, templates=templates)))
    return found


async def _state(admin: AsyncConnection, name: str, *, drop: bool, templates: bool) -> str:
    if name.endswith("_template"):
        if not (drop and templates):
            return "template"
        # The lock a run holds while it builds or clones the template.
        if not await admin.scalar(text("SELECT pg_try_advisory_lock(hashtext(:name))"), {"name": name}):
            return "skipped: a run is building or cloning it"
        try:
            return await _drop(admin, name)
        finally:
            await admin.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": name})
    if not await admin.scalar(text(_TRY_LEASE), {"key": _LEASE_KEY, "name": name}):
        return "in use"
    try:
        return await _drop(admin, name) if drop else "left by a run that ended"
    finally:
        await admin.execute(text(_END_LEASE), {"key": _LEASE_KEY, "name": name})


async def _drop(admin: AsyncConnection, name: str) -> str:
    # Never WITH (FORCE): a connection still open may be a live run's whose lease connection broke.
    sessions = await admin.scalar(
        text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
    )
    if sessions:
        return f"skipped: {sessions} connection(s) open to it"
    try:
        await admin.execute(text(f'DROP DATABASE "{name}"'))
    except DBAPIError as exc:  # another role's database, a connection that came meanwhile
        return f"skipped: {server_message(exc)}"
    return "dropped"


def sqlite_left_behind(folder: Path, *, drop: bool = False, templates: bool = False) -> list[LeftDatabase]:
    """harness's SQLite test files in ``folder``, with who holds each; with ``drop``, the files no
    live run holds are deleted (templates too, with ``templates``: the next run rebuilds them)."""
    found = []
    for marker in sorted(folder.glob("*.harness")):
        path = marker.with_name(marker.name.removesuffix(".harness"))
        if path.stem.endswith("_template"):
            if not (drop and templates):
                found.append(LeftDatabase(path.name, "template"))
                continue
            with _try_lock(lock_file(path)) as free:  # not while a run builds or copies it
                found.append(
                    LeftDatabase(path.name, _delete(path) if free else "skipped: a run is copying it")
                )
            continue
        lease = lease_file(path)
        if not FILE_LOCKS:  # no leases here (Windows): no way to tell a live run's file
            found.append(LeftDatabase(path.name, "in use, for all harness can tell"))
            continue
        if not lease.exists():  # a run makes it before the file and deletes it after
            found.append(LeftDatabase(path.name, _delete(path) if drop else "left by a run that ended"))
            continue
        with _try_lock(lease) as free:
            if not free:
                found.append(LeftDatabase(path.name, "in use"))
            else:
                found.append(LeftDatabase(path.name, _delete(path) if drop else "left by a run that ended"))
                if drop:
                    lease.unlink(missing_ok=True)
    return found


def _delete(path: Path) -> str:
    remove_sqlite_file(path)
    return "dropped"


def remove_sqlite_file(path: Path) -> None:
    """Delete the SQLite test file at ``path`` with its journal files and marker; refuse one harness did not mark."""
    marker = path.with_name(path.name + ".harness")
    if not path.exists():
        marker.unlink(missing_ok=True)
        return
    if not marker.exists():
        msg = (
            f"SQLite file {str(path)!r} exists but was not created by harness, so harness will not delete or "
            "change it. Delete it yourself if it is disposable, or choose another test database name."
        )
        raise UnsafeDatabaseError(msg)
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm"))):
        leftover.unlink(missing_ok=True)
    marker.unlink()


@contextlib.contextmanager
def _try_lock(lock: Path) -> Iterator[bool]:
    if not FILE_LOCKS:  # no way to tell a live run's file: never take one for stale
        yield False
        return
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
