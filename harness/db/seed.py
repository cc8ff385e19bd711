"""Seed data: rows committed once into the test database, read fresh by each test.

    async def reference_data(session: AsyncSession) -> dict[str, object]:
        acme = Tenant(name="Acme")
        session.add_all([acme, User(tenant=acme, email="admin@acme.test")])
        return {"acme": acme}

The seed function runs once per run, right after the schema, in the database every worker clones
(PostgreSQL's template, SQLite's template file), so every worker sees the same rows with the same
ids and tokens. What it returns is stored by identity in the ``harness_seed`` table; each test gets
those objects loaded into its own session (`load_seeded`), so a change one test makes, even to a
relationship, is rolled back with it and never reaches the next test.
"""

from __future__ import annotations

import base64
import importlib
import pickle
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, Text, inspect, select
from sqlalchemy.exc import NoInspectionAvailable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from harness.db.scopes import current_session_var
from harness.exceptions import SchemaError

__all__ = ["SEED_TABLE", "SeedFunction", "Seeded", "load_seeded", "plant_seed"]

SeedFunction = Callable[[AsyncSession], Awaitable[Mapping[str, Any] | None]]
"""An async function that adds rows through the session it is given (factories create through it
too) and returns the objects tests reach by name: a mapped object, or a list of them, per name."""

SEED_TABLE = "harness_seed"
_seed_table = Table(
    SEED_TABLE,
    MetaData(),
    Column("name", String(200), primary_key=True),
    Column("model", String(500), nullable=False),  # module:qualname of the mapped class
    Column("identities", Text, nullable=False),  # (many, [identity, ...]), pickled: any key type
)


async def plant_seed(connection: AsyncConnection, seed: SeedFunction, database: str) -> None:
    """Run ``seed`` on ``connection`` (in its transaction) and record the objects it names."""
    what = getattr(seed, "__qualname__", repr(seed))
    session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    token = current_session_var.set(session)  # factories create through the seed's session
    try:
        named = await seed(session)
        await session.flush()
        rows = [_row(name, value, what) for name, value in (named or {}).items()]
        if hidden := sorted(name for name in named or {} if name.startswith("_") or hasattr(Seeded, name)):
            msg = (
                f"The seed function {what} named {', '.join(map(repr, hidden))}, which `seeded.<name>` cannot reach "
                "(a method of the mapping, or a private name): choose other names."
            )
            raise SchemaError(msg)
        await session.commit()  # the session's savepoint; the connection's transaction commits it all
    except SchemaError:
        raise
    except Exception as exc:
        msg = (
            f"The seed function {what} failed on test database {database!r}: {type(exc).__name__}: {exc}. "
            "Fix the seed function; the half-built database was discarded."
        )
        raise SchemaError(msg) from exc
    finally:
        current_session_var.reset(token)
        await session.close()
    await connection.run_sync(_seed_table.create)
    if rows:
        await connection.execute(_seed_table.insert(), rows)


def _row(name: str, value: Any, what: str) -> dict[str, str]:
    many = isinstance(value, list | tuple)
    objects = list(value) if many else [value]
    models, identities = set(), []
    for obj in objects:
        try:
            state = inspect(obj)
        except NoInspectionAvailable:
            state = None
        if state is None or not hasattr(state, "identity") or state.identity is None:
            msg = (
                f"The seed function {what} returned {name!r}: {obj!r}, which is not a row it added. Return "
                "mapped objects the session holds (or lists of them), by name."
            )
            raise SchemaError(msg)
        models.add(f"{type(obj).__module__}:{type(obj).__qualname__}")
        identities.append(state.identity)
    if len(models) > 1:
        msg = f"The seed function {what} returned {name!r} with objects of several classes ({', '.join(sorted(models))}): give each class a name of its own."
        raise SchemaError(msg)
    payload = base64.b64encode(pickle.dumps((many, identities))).decode()
    return {"name": name, "model": models.pop() if models else "builtins:object", "identities": payload}


class Seeded(Mapping[str, Any]):
    """The seed function's named objects, loaded into one test's session: `seeded.acme`, `seeded["acme"]`."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self._objects = objects

    def __getitem__(self, name: str) -> Any:
        try:
            return self._objects[name]
        except KeyError:
            raise KeyError(self._missing(name)) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._objects[name]
        except KeyError:
            raise AttributeError(self._missing(name)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        return f"<Seeded {', '.join(self._objects) or 'nothing'}>"

    def _missing(self, name: str) -> str:
        named = ", ".join(sorted(self._objects)) or "nothing"
        return f"The seed function named no {name!r}; it returned {named}."


async def load_seeded(session: AsyncSession) -> Seeded:
    """The seed's named objects, loaded into ``session``: one query for the names, one per object."""
    rows = (await session.execute(select(_seed_table))).all()
    objects: dict[str, Any] = {}
    for name, model, payload in rows:
        module, _, qualname = model.partition(":")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        many, identities = pickle.loads(base64.b64decode(payload))
        loaded = [await session.get(cls, identity) for identity in identities]
        if any(obj is None for obj in loaded):
            msg = (
                f"Seeded {name!r} ({qualname} {identities}) is gone from the test database: a test with real "
                "commits deleted it. Seed rows are shared by every test; change them only in rolled-back tests."
            )
            raise SchemaError(msg)
        objects[name] = loaded if many else loaded[0]
    return Seeded(objects)
