"""polyfactory's `SQLAlchemyFactory`, persisting through the test's session.

polyfactory's own async persistence commits by default (escaping the test's rollback) and fills
integer primary keys with random numbers, which collide within a batch. Subclassing this module's
`SQLAlchemyFactory` instead keeps polyfactory's declarations and changes only that: creation adds
the objects to the test's session and flushes, never commits, and leaves the keys that the
database or SQLAlchemy makes to them. Needs the `polyfactory` extra
(`pip install 'pytest-async-harness[polyfactory]'`).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Generic, Optional, TypeVar

from polyfactory.factories.base import BaseFactory
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory as _PolyfactorySQLAlchemyFactory
from polyfactory.persistence import AsyncPersistenceProtocol
from polyfactory.utils.types import Frozendict
from sqlalchemy import Column, Enum, Integer, SmallInteger, String, UniqueConstraint, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import RelationshipProperty

from harness.db import current_session
from harness.exceptions import FactoryError
from harness.factories import _LOADABLE, _is_required, apply_pending_seed

__all__ = ["SQLAlchemyFactory"]  # SessionPersistence and reseed are its parts

T = TypeVar("T")


class SessionPersistence(AsyncPersistenceProtocol[T]):
    """polyfactory persistence that adds to the test's session and flushes; it never commits.

    The session is the one harness's factories use: the active rollback scope's, the
    ``db_session`` fixture's, or one set with `harness.use_session`.
    """

    async def save(self, data: T) -> T:
        """Add one object to the test's session and flush it."""
        (saved,) = await self.save_many([data])
        return saved

    async def save_many(self, data: list[T]) -> list[T]:
        """Add the objects to the test's session, flush, and load what a test would lazy-load."""
        session = current_session()
        if session is None:
            names = ", ".join(sorted({type(item).__name__ for item in data})) or "objects"
            msg = (
                f"polyfactory has no session to create {names} through. Use the db_session fixture, call it "
                "inside `async with rollback_scope(engine)`, or wrap it in `with harness.use_session(session):`."
            )
            raise FactoryError(msg)
        session.add_all(data)
        await session.flush()
        await _load_unloaded(session, data)
        return data


async def _load_unloaded(session: AsyncSession, objects: list[Any]) -> None:
    # Reading them in SQLAlchemy's greenlet loads them now; read later by the test, they would
    # raise MissingGreenlet. Server defaults are expired by the flush; relationships left unset
    # are not loaded yet.
    def load(_session: Any) -> None:
        for instance in objects:
            state = inspect(instance)
            relationships = state.mapper.relationships
            for key in state.unloaded:
                relationship: RelationshipProperty[Any] | None = relationships.get(key)
                if key in state.expired_attributes or (
                    relationship is not None and relationship.lazy in _LOADABLE
                ):
                    getattr(instance, key)

    await session.run_sync(load)


class SQLAlchemyFactory(_PolyfactorySQLAlchemyFactory[T], Generic[T]):
    """polyfactory's `SQLAlchemyFactory`, creating through the test's session: flush, never commit.

    ``await ContactFactory.create_async()`` and ``create_batch_async(n)`` persist; ``build()`` and
    ``batch()`` touch no database. Primary keys the database or SQLAlchemy fills (autoincrement,
    identity, a default, a server default) are left to them. Related objects polyfactory builds on the fly
    get the same treatment.
    """

    __is_base_factory__ = True
    # polyfactory 3's defaults, stated: nested objects are built, so their keys get filled.
    __set_relationships__ = True
    __set_association_proxy__ = True
    # A random foreign key names a row that does not exist. Left unset, a relationship
    # polyfactory builds (or the test passes) fills it at the flush, or it stays NULL.
    __set_foreign_keys__ = False

    @classmethod
    def process_kwargs(cls, **kwargs: Any) -> dict[str, Any]:
        """polyfactory's values for a build, drawn after the test's seed is applied (see the plugin)."""
        apply_pending_seed()
        return dict(super().process_kwargs(**kwargs))

    @classmethod
    def should_column_be_set(cls, column: Any) -> bool:
        """polyfactory's rule, minus primary keys the database or SQLAlchemy makes (harness's own rule)."""
        if isinstance(column, Column) and column.primary_key and not _is_required(column):
            return False
        return bool(super().should_column_be_set(column))

    @classmethod
    def get_type_from_column(cls, column: Column[Any]) -> Any:
        """polyfactory's type, widened for unique strings and integers so a batch does not collide.

        polyfactory draws strings of any length up to the column's, the empty one included, and
        small integers: in a batch of a hundred, two rows of a unique column often get the same.
        """
        wide = _wide_type(column) if _unique_alone(column) else None
        if wide is None:
            return super().get_type_from_column(column)
        return Optional[wide] if column.nullable else wide  # noqa: UP045  (a runtime type, not a hint)

    @classmethod
    def _get_async_persistence(cls) -> AsyncPersistenceProtocol[T]:
        for name in ("__async_session__", "__async_persistence__"):
            if getattr(cls, name) is not None:
                msg = (
                    f"{cls.__name__} sets {name}, but harness creates through the test's session (the active "
                    "rollback scope, the db_session fixture, or `with harness.use_session(session)`) and never "
                    "commits: remove it."
                )
                raise FactoryError(msg)
        return SessionPersistence()

    @classmethod
    def create_sync(cls, **kwargs: Any) -> T:
        """Refused: the test's session is async. Use ``await create_async()``."""
        msg = f"{cls.__name__}.create_sync() cannot use the test's AsyncSession: use `await {cls.__name__}.create_async()`."
        raise FactoryError(msg)

    @classmethod
    def create_batch_sync(cls, size: int, **kwargs: Any) -> list[T]:
        """Refused: the test's session is async. Use ``await create_batch_async(n)``."""
        msg = (
            f"{cls.__name__}.create_batch_sync() cannot use the test's AsyncSession: use "
            f"`await {cls.__name__}.create_batch_async({size})`."
        )
        raise FactoryError(msg)


def reseed(seed: str) -> None:
    """Seed polyfactory's random values (its `Random` and its Faker) from ``seed``.

    The pytest plugin calls it before each test, with the run's seed and the test's node id, as it
    reseeds factory-boy: a failing test replays with the same data. polyfactory's Faker is shared
    by all its factories, so it is reseeded too, also for a factory with its own ``__random_seed__``.
    """
    BaseFactory.seed_random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))


def _unique_alone(column: Column[Any]) -> bool:
    if column.unique or list(column.table.primary_key.columns) == [column]:
        return True
    alone = [column.name]
    return any(
        isinstance(constraint, UniqueConstraint) and constraint.columns.keys() == alone
        for constraint in column.table.constraints
    ) or any(index.unique and index.columns.keys() == alone for index in column.table.indexes)


def _wide_type(column: Column[Any]) -> Any:
    if isinstance(column.type, String) and not isinstance(column.type, Enum):
        longest = column.type.length or 32
        return Annotated[str, Frozendict({"min_length": min(longest, 16), "max_length": longest})]
    if isinstance(column.type, Integer):
        largest = 2**15 - 1 if isinstance(column.type, SmallInteger) else 2**31 - 1
        return Annotated[int, Frozendict({"ge": 1, "le": largest})]
    return None
