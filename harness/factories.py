"""Async factories on factory-boy: declare once, create through the test's session, fast in batches.

``await ContactFactory.create()`` builds the object graph with factory-boy (every declaration
works), then persists it through the session of the current rollback scope: it never commits.
``create_batch(n)`` builds all ``n`` graphs first, then inserts them with one executemany INSERT
per table (Core, on the session's connection) and makes the objects persistent in the session as
a flush would; the ORM's flush does it instead when a listener or a mapping feature needs it.
``build()`` stays synchronous and touches no database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import itertools
import operator
import re
import sys
import uuid
import warnings
from collections.abc import Coroutine, Generator, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

import factory.base
import factory.declarations
import factory.random
from factory import enums
from factory.base import Factory
from factory.faker import Faker
from sqlalchemy import Column, Table, func, insert, inspect, select, text
from sqlalchemy import types as sqltypes
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import (
    InstanceState,
    Mapper,
    RelationshipDirection,
    Session,
    configure_mappers,
)
from sqlalchemy.orm.attributes import get_history, instance_state, set_committed_value
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.schema import sort_tables
from sqlalchemy.sql.elements import ClauseElement

from harness._where import shown_as
from harness.db.scopes import current_session, current_session_var
from harness.exceptions import FactoryError

__all__ = ["Creation", "ModelFactory", "reseed_on_first_use", "use_session"]

T = TypeVar("T")

_LOCK_KEY = "harness.factory_lock"
# Relationships harness may read after a flush: the others raise, never load, or are queries.
_LOADABLE = {"select", "selectin", "joined", "subquery", "immediate", True}
_REFRESH_CHUNK = 500  # primary keys per SELECT … IN when reloading server defaults


@contextlib.contextmanager
def use_session(session: AsyncSession) -> Iterator[AsyncSession]:
    """Make factories create through ``session`` inside the block.

    Rollback scopes (and the ``db_session`` fixture) do this for their session already; use it for
    a session of your own, such as one of the real-commit tests.
    """
    if not isinstance(session, AsyncSession):  # untyped callers
        msg = f"use_session() takes an AsyncSession, got {type(session).__name__}."  # type: ignore[unreachable]
        raise TypeError(msg)
    token = current_session_var.set(session)
    try:
        yield session
    finally:
        current_session_var.reset(token)


# -- What harness knows about a mapped class ------------------------------------------------------


@dataclass
class _ModelPlan:
    """Per mapped class: what to check before the INSERT and what to load after it."""

    mapper: Mapper[Any]
    empty_when_new: list[tuple[str, Any]] = field(default_factory=list)  # (key, [] or None) for new rows
    scalars: list[str] = field(default_factory=list)  # many-to-one, loaded after the flush if unset
    lengths: list[tuple[str, Column[Any], int]] = field(default_factory=list)
    enums: list[tuple[str, Column[Any], sqltypes.Enum]] = field(default_factory=list)
    required: list[tuple[str, Column[Any], str | None]] = field(
        default_factory=list
    )  # key, column, relationship
    serial_key: tuple[str, Column[Any]] | None = (
        None  # the integer primary key harness assigns before the INSERT
    )
    # For inserting with Core: the mapped columns of the class's table (None: only the ORM's flush
    # can insert this class), those the ORM would send as NULL when unset, and the relationships.
    columns: list[tuple[str, Column[Any]]] | None = None
    attribute_of: dict[Column[Any], str] = field(default_factory=dict)
    key_columns: list[tuple[str, Column[Any]]] = field(default_factory=list)
    column_keys: list[str] = field(default_factory=list)
    null_when_unset: list[str] = field(default_factory=list)  # column keys
    none_as_value: frozenset[str] = frozenset()  # attributes whose None is a value (JSON null), not "unset"
    links: list[_Link] = field(default_factory=list)


@dataclass(frozen=True)
class _Link:
    """A relationship, as the attributes that carry the key from the "one" side to the "many" side."""

    key: str
    many_to_one: bool
    pairs: list[tuple[str, str]]  # (attribute on the "one" side, attribute on the "many" side)
    uselist: bool
    back_populates: str | None
    unsupported: bool  # many-to-many or post_update: the ORM's flush inserts these
    other_table: Any  # the related class's table


_plans: dict[type, _ModelPlan] = {}


def _plan(model: type) -> _ModelPlan:
    plan = _plans.get(model)
    if plan is not None:
        return plan
    configure_mappers()
    mapper: Mapper[Any] = inspect(model)
    plan = _ModelPlan(mapper)
    provided_by: dict[Column[Any], str] = {}
    for rel in mapper.relationships:
        loadable = rel.lazy in _LOADABLE and not rel.viewonly
        if rel.direction is RelationshipDirection.MANYTOONE:
            for column in rel.local_columns:
                provided_by.setdefault(column, rel.key)  # type: ignore[arg-type]
            if loadable:
                plan.scalars.append(rel.key)
        elif loadable:  # one-to-many, many-to-many, the parent side of one-to-one
            plan.empty_when_new.append((rel.key, [] if rel.uselist else None))
    for prop in mapper.column_attrs:
        if len(prop.columns) != 1 or not isinstance(prop.columns[0], Column):
            continue
        column = prop.columns[0]
        if isinstance(column.type, sqltypes.Enum):
            plan.enums.append((prop.key, column, column.type))
        elif isinstance(column.type, sqltypes.String) and column.type.length:
            plan.lengths.append((prop.key, column, column.type.length))
        if _is_required(column) and column is not mapper.polymorphic_on:  # the ORM sets the discriminator
            plan.required.append((prop.key, column, provided_by.get(column)))
    key_column = mapper.base_mapper.local_table.autoincrement_column  # type: ignore[attr-defined]
    if (
        key_column is not None
        and isinstance(key_column.type, sqltypes.Integer)
        and len(mapper.primary_key) == 1
    ):
        plan.serial_key = (mapper.get_property_by_column(key_column).key, key_column)
    _plan_core_insert(plan)
    _plans[model] = plan
    return plan


def _plan_core_insert(plan: _ModelPlan) -> None:
    mapper = plan.mapper
    table = mapper.local_table
    if (
        mapper.inherits is not None
        or mapper.polymorphic_on is not None
        or mapper.version_id_col is not None
        or not isinstance(table, Table)
    ):
        return
    columns: list[tuple[str, Column[Any]]] = []
    for prop in mapper.column_attrs:
        mapped = [column for column in prop.columns if isinstance(column, Column) and column.table is table]
        if len(mapped) > 1:
            return
        columns.extend((prop.key, column) for column in mapped)
    try:
        for rel in mapper.relationships:
            if rel.viewonly:
                continue
            one, many = (
                (rel.mapper, mapper)
                if rel.direction is RelationshipDirection.MANYTOONE
                else (mapper, rel.mapper)
            )
            plan.links.append(
                _Link(
                    rel.key,
                    rel.direction is RelationshipDirection.MANYTOONE,
                    [
                        (one.get_property_by_column(source).key, many.get_property_by_column(target).key)
                        for source, target in rel.synchronize_pairs
                    ],
                    bool(rel.uselist),
                    rel.back_populates
                    or next(
                        (
                            r.key
                            for r in rel.mapper.relationships
                            if r.back_populates == rel.key and r.mapper is mapper
                        ),
                        None,
                    ),
                    rel.secondary is not None or rel.post_update,
                    rel.mapper.local_table,
                )
            )
    except UnmappedColumnError:  # a foreign key the class does not map: the ORM knows what to do
        return
    plan.attribute_of = {column: key for key, column in columns}
    plan.key_columns = [(key, column) for key, column in columns if column.primary_key]
    plan.column_keys = [key for key, _ in columns]
    plan.null_when_unset = [
        column.key
        for _, column in columns
        if column.nullable
        and not column.primary_key
        and column.default is None
        and column.server_default is None
        and not column.type.should_evaluate_none
    ]
    plan.none_as_value = frozenset(key for key, column in columns if column.type.should_evaluate_none)
    plan.columns = columns


def _is_required(column: Column[Any]) -> bool:
    """A column the INSERT cannot leave out: NOT NULL, no default of any kind, not generated."""
    if column.nullable or column.default is not None or column.server_default is not None:
        return False
    if column.computed is not None or column.identity is not None:
        return False
    table = column.table
    return not (column.primary_key and getattr(table, "autoincrement_column", None) is column)


# -- Values for the columns a factory leaves undeclared --------------------------------------------

_counters: dict[Column[Any], Iterator[int]] = {}


def _derived_value(column: Column[Any]) -> Any:
    """A value that satisfies ``column``'s type and constraints; unique columns get distinct values."""
    n = next(_counters.setdefault(column, itertools.count(1)))
    kind = column.type
    if isinstance(kind, sqltypes.Enum):
        if kind.enum_class is not None:
            return next(iter(kind.enum_class))
        return kind.enums[0]
    if isinstance(kind, sqltypes.String):
        return _fit(f"{column.name}-{n}", n, kind.length)
    if isinstance(kind, sqltypes.Boolean):
        return False
    if isinstance(kind, sqltypes.SmallInteger):
        return n % 32767
    if isinstance(kind, sqltypes.Integer):
        return n
    if isinstance(kind, sqltypes.Numeric):
        return decimal.Decimal(n) if kind.asdecimal else float(n)
    if isinstance(kind, sqltypes.DateTime):
        moment = dt.datetime(2024, 1, 1) + dt.timedelta(minutes=n)
        return moment.replace(tzinfo=dt.UTC) if kind.timezone else moment
    if isinstance(kind, sqltypes.Date):
        return dt.date(2024, 1, 1) + dt.timedelta(days=n % 3650)
    if isinstance(kind, sqltypes.Time):
        return dt.time(12, 0)
    if isinstance(kind, sqltypes.Interval):
        return dt.timedelta(0)
    if isinstance(kind, sqltypes.Uuid):
        value = uuid.UUID(int=factory.random.randgen.getrandbits(128), version=4)
        return value if kind.as_uuid else str(value)
    if isinstance(kind, sqltypes.JSON):
        return {}
    if isinstance(kind, sqltypes.ARRAY):
        return []
    if isinstance(kind, sqltypes.LargeBinary):
        return f"{column.name}-{n}".encode()
    return None


def _fit(value: str, n: int, length: int | None) -> str:
    if length is None or len(value) <= length:
        return value
    return str(n)[-length:]


# -- The factory base ------------------------------------------------------------------------------

_UNSUPPORTED_OPTIONS = {
    "sqlalchemy_session": "harness factories create through the test's session (the active rollback "
    "scope, the db_session fixture, or `with harness.use_session(session)`): remove Meta.sqlalchemy_session.",
    "sqlalchemy_session_factory": "harness factories create through the test's session (the active rollback "
    "scope, the db_session fixture, or `with harness.use_session(session)`): remove Meta.sqlalchemy_session_factory.",
    "sqlalchemy_session_persistence": "harness factories always flush and never commit (a commit would escape the "
    "test's rollback): remove Meta.sqlalchemy_session_persistence.",
    "sqlalchemy_get_or_create": "get-or-create is not supported: it hides collisions between test data. Create the "
    "row once (in the test or in class-level data) and pass it in, or look it up with `await session.scalar(select(...))`.",
}

_registry: dict[type, type[ModelFactory[Any]]] = {}


class _ModelFactoryOptions(factory.base.FactoryOptions):
    def _fill_from_meta(self, meta: Any, base_meta: Any) -> None:
        for name, advice in _UNSUPPORTED_OPTIONS.items():
            if meta is not None and name in vars(meta):
                msg = f"{getattr(self.factory, '__name__', 'factory')}.Meta.{name}: {advice}"
                raise FactoryError(msg)
        super()._fill_from_meta(meta, base_meta)  # type: ignore[no-untyped-call]

    def _build_default_options(self) -> list[factory.base.OptionDefault]:
        return [
            *super()._build_default_options(),  # type: ignore[no-untyped-call]
            factory.base.OptionDefault("derive_fields", True, inherit=True),  # type: ignore[no-untyped-call]
        ]

    def contribute_to_class(self, factory: Any, *args: Any, **kwargs: Any) -> None:
        super().contribute_to_class(factory, *args, **kwargs)  # type: ignore[no-untyped-call]
        model = self.model
        if not self.abstract and isinstance(model, type) and "<locals>" not in factory.__qualname__:
            # The first module-level factory declared for a model is the one harness uses for its
            # foreign keys (one declared inside a test would make results depend on test order).
            _registry.setdefault(model, factory)


class ModelFactory(Factory[T]):
    """A factory-boy factory for a SQLAlchemy model whose ``create`` is awaited.

    Declare it as any factory-boy factory (``Sequence``, ``Faker``, ``SubFactory``,
    ``RelatedFactory``, ``Trait``, ``post_generation``…); ``class Meta: model = Contact``. Columns it
    does not declare get values that satisfy their type and constraints when they are required
    (``Meta.derive_fields = False`` turns that off), foreign keys through the related model's
    factory.

    ``await Factory.create(**kw)`` and ``await Factory.create_batch(n, **kw)`` persist through the
    current test's session (see `use_session`), never commit, and return objects whose
    relationships are loaded. ``build()`` and ``build_batch()`` are synchronous and touch no
    database. ``post_generation`` hooks written as ``async def`` run after the insert, so they see
    primary keys and may await other factories; synchronous hooks run while the graph is built.
    """

    _options_class: ClassVar[type[factory.base.FactoryOptions]] = _ModelFactoryOptions

    class Meta:
        abstract = True

    @classmethod
    def _generate(cls, strategy: str, params: dict[str, Any]) -> Any:
        apply_pending_seed()
        return super()._generate(strategy, params)  # type: ignore[no-untyped-call]

    @classmethod
    def create(cls, **kwargs: Any) -> Creation[T]:  # type: ignore[override]  # awaited, unlike factory-boy's
        """Build one object graph and persist it through the test's session: ``await`` the result."""
        call = f"{cls.__name__}.create()"
        return Creation(cls._persist(1, kwargs, call), call, single=True)

    @classmethod
    def create_batch(cls, size: int, **kwargs: Any) -> Creation[list[T]]:  # type: ignore[override]
        """Build ``size`` object graphs, then insert them together (one INSERT per table): ``await`` the result."""
        if size < 0:
            msg = f"{cls.__name__}.create_batch() takes a count of objects, got {size!r}."
            raise TypeError(msg)
        call = f"{cls.__name__}.create_batch({size})"
        return Creation(cls._persist(size, kwargs, call), call)

    @classmethod
    async def _persist(cls, size: int, kwargs: dict[str, Any], call: str) -> list[T]:
        session = current_session()
        if session is None:
            msg = (
                f"{call} has no session to create through. Use the db_session fixture (or a factory fixture made "
                "by harness.register_factory), call it inside `async with rollback_scope(engine)`, or wrap it in "
                "`with harness.use_session(session):`."
            )
            raise FactoryError(msg)
        batch = _Batch(call)
        try:
            # One creation at a time per session (asyncio.gather of creates): a flush cannot start
            # while another is running. Async hooks run after, unlocked: they may create in turn.
            async with session.info.setdefault(_LOCK_KEY, asyncio.Lock()):
                if session.new or session.dirty or session.deleted:
                    # The test's own pending changes first, as the flush of the batch would have
                    # sent them: the batch then goes in on its own (see _core_insert_order).
                    await session.flush()
                token = _building.set(batch)
                try:
                    generate = cls._generate
                    made = [generate(enums.CREATE_STRATEGY, dict(kwargs)) for _ in range(size)]
                finally:
                    _building.reset(token)
                await batch.persist(session)
            while batch.hooks:
                await batch.hooks.pop(0)
        finally:
            batch.discard()  # hooks that did not run, after an error: closed, not left un-awaited
        return made

    @classmethod
    def _build(cls, model_class: type, *args: Any, **kwargs: Any) -> Any:
        cls._check_arguments(kwargs)
        if getattr(cls._meta, "derive_fields", True):
            cls._derive_fields(model_class, kwargs, enums.BUILD_STRATEGY)
        instance = model_class(*args, **kwargs)
        return instance

    @classmethod
    def _create(cls, model_class: type, *args: Any, **kwargs: Any) -> Any:
        batch = _building.get()
        if batch is None:
            msg = (
                f"{cls.__name__} can only create inside `await {cls.__name__}.create()` or `create_batch()`."
            )
            raise FactoryError(msg)
        cls._check_arguments(kwargs)
        if getattr(cls._meta, "derive_fields", True):
            cls._derive_fields(model_class, kwargs, enums.CREATE_STRATEGY)
        instance = model_class(*args, **kwargs)
        for key, empty in _plan(model_class).empty_when_new:
            # A new row has no children in the database yet: an empty, loaded collection spares the
            # test a lazy load (MissingGreenlet) and still collects the children made after it.
            if key not in instance.__dict__:
                set_committed_value(instance, key, empty)
        batch.objects.append((instance, cls))
        return instance

    @classmethod
    def _after_postgeneration(
        cls, instance: Any, create: bool, results: dict[str, Any] | None = None
    ) -> None:
        batch = _building.get()
        for value in (results or {}).values():
            if asyncio.iscoroutine(value):
                if create and batch is not None:
                    batch.hooks.append(value)
                else:  # async hooks do database work; a build has none to do
                    value.close()

    @classmethod
    def _check_arguments(cls, kwargs: dict[str, Any]) -> None:
        for name, value in kwargs.items():
            if isinstance(value, Creation):
                value.close()
                msg = (
                    f"{cls.__name__}.{name} got {value.call}, which returns an awaitable, not an object: declare "
                    f"it as factory.SubFactory(...) so it is created with {cls.__name__}, or create it first and pass it in."
                )
                raise FactoryError(msg)

    @classmethod
    def _derive_fields(cls, model_class: type, kwargs: dict[str, Any], strategy: str) -> None:
        for key, column, relationship in _plan(model_class).required:
            if key in kwargs or (relationship is not None and relationship in kwargs):
                continue
            if column.foreign_keys:
                kwargs[relationship or key] = cls._derive_parent(
                    model_class, key, column, relationship, strategy
                )
                continue
            value = _derived_value(column)
            if value is None:
                msg = (
                    f"{cls.__name__}: column {column.table.name}.{column.name} is required and harness cannot derive a "
                    f"value of type {column.type}. Declare `{key} = ...` on the factory."
                )
                raise FactoryError(msg)
            kwargs[key] = value

    @classmethod
    def _derive_parent(
        cls, model_class: type, key: str, column: Column[Any], relationship: str | None, strategy: str
    ) -> Any:
        if relationship is None:
            msg = (
                f"{cls.__name__}: column {column.table.name}.{column.name} is a required foreign key with no "
                f"relationship on {model_class.__name__} to fill it. Declare `{key} = ...` on the factory, or map a "
                "relationship() for it."
            )
            raise FactoryError(msg)
        target = _plan(model_class).mapper.relationships[relationship].mapper.class_
        parent_factory = _registry.get(target)
        if parent_factory is None:
            msg = (
                f"{cls.__name__}: {model_class.__name__}.{relationship} is required ({column.table.name}.{column.name} "
                f"is NOT NULL) and no factory is registered for {target.__name__}. Declare "
                f"`{relationship} = factory.SubFactory({target.__name__}Factory)` on {cls.__name__}, define a "
                f"ModelFactory for {target.__name__}, or pass {relationship}=... when creating."
            )
            raise FactoryError(msg)
        return parent_factory._generate(strategy, {})


# -- Seeding: per test, at the first use of a factory ----------------------------------------------

_pending_seed: tuple[str, bool] | None = None
_seeded_elsewhere = False  # factory-boy's random state was set by someone else since the reseed was asked


def _watch_factory_boy_seeding() -> None:
    # factory.random.reseed_random() and set_random_state() both go through randgen.setstate: a
    # test that seeds factory-boy itself is seen there (unlike a draw, which also changes the state).
    randgen = factory.random.randgen
    if getattr(randgen, "_harness_watched", False):
        return
    setstate = randgen.setstate

    def watched_setstate(state: Any) -> None:
        global _seeded_elsewhere
        _seeded_elsewhere = True
        setstate(state)

    randgen.setstate = watched_setstate  # type: ignore[method-assign]
    randgen._harness_watched = True  # type: ignore[attr-defined]


def reseed_on_first_use(seed: str | None, *, factory_boy: bool = True) -> None:
    """Seed the factories' randomness from ``seed`` when a harness factory is next used (None: cancel).

    The pytest plugin calls it before each test with the run's seed and the test's id, so that a
    failing test replays with the same data; a test that uses no harness factory keeps the random
    state it had (loading harness changes nothing for it), and a test that seeds factory-boy itself
    (``factory.random.reseed_random``) keeps its own seed. Seeds factory-boy's and Faker's random
    values (unless ``factory_boy`` is False: pytest-randomly seeds those itself) and polyfactory's.
    """
    global _pending_seed, _seeded_elsewhere
    _watch_factory_boy_seeding()
    _pending_seed = None if seed is None else (seed, factory_boy)
    _seeded_elsewhere = False


def apply_pending_seed() -> None:
    """Apply the seed `reseed_on_first_use` left, once; factories call it before they draw values."""
    global _pending_seed
    if _pending_seed is None:
        return
    (seed, factory_boy), _pending_seed = _pending_seed, None
    if factory_boy and not _seeded_elsewhere:
        factory.random.reseed_random(seed)  # type: ignore[no-untyped-call]
    polyfactory = sys.modules.get("harness.polyfactory")  # loaded only by users of its factories
    if polyfactory is not None:
        polyfactory.reseed(seed)


# -- The awaitable that create() returns ----------------------------------------------------------


_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})


class Creation(Generic[T]):
    """What ``create()``/``create_batch()`` return: nothing happens until it is awaited."""

    __slots__ = ("_coroutine", "_fix", "_settled", "_single", "call", "where")

    def __init__(self, coroutine: Coroutine[Any, Any, list[Any]], call: str, *, single: bool = False) -> None:
        self._coroutine = coroutine
        self._single = single
        self._settled = False
        self.call = call
        frame = sys._getframe(2)
        self.where = f"{shown_as(frame.f_code.co_filename)}:{frame.f_lineno}"
        function = frame
        while (
            function.f_code.co_name in _COMPREHENSIONS and function.f_back is not None
        ):  # their own frames (3.11)
            function = function.f_back
        awaits = function.f_code.co_flags & (CO_COROUTINE | CO_ASYNC_GENERATOR)
        self._fix = (
            f"Write `await {call}`."
            if awaits
            else f"{function.f_code.co_name} is a plain def, which cannot await: declare it `async def` and write "
            f"`await {call}`."
        )

    def __await__(self) -> Generator[Any, None, T]:
        self._settled = True
        made = yield from self._coroutine.__await__()
        return made[0] if self._single else made  # type: ignore[return-value]

    def close(self) -> None:
        """Drop the creation without running it."""
        self._settled = True
        self._coroutine.close()

    def _not_awaited(self, what: str) -> NoReturn:
        self.close()
        msg = f"{self.call} at {self.where} returns an awaitable, so {what}. {self._fix}"
        raise TypeError(msg)

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__") or name.isupper():  # protocol probes (factory-boy's among them)
            raise AttributeError(name)
        self.close()  # the test reads the object it thinks it made: this error says it all
        msg = (
            f"{self.call} at {self.where} returns an awaitable, so it has no attribute {name!r}. {self._fix}"
        )
        raise AttributeError(msg)

    def __iter__(self) -> NoReturn:
        self._not_awaited("it cannot be iterated")

    def __bool__(self) -> NoReturn:
        self._not_awaited("it has no truth value")

    def __del__(self) -> None:
        if not self._settled:
            self._coroutine.close()
            warnings.warn(
                f"{self.call} at {self.where} was never awaited, so nothing was created. {self._fix}",
                RuntimeWarning,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        return f"<{self.call} not yet awaited>"


# -- One create() call: build the graphs, then persist them together ------------------------------


@dataclass
class _Batch:
    call: str
    objects: list[tuple[Any, type[ModelFactory[Any]]]] = field(default_factory=list)
    hooks: list[Coroutine[Any, Any, Any]] = field(default_factory=list)

    def by_class(self) -> list[_TableRows]:
        instances = list(map(_FIRST, self.objects))
        if len(models := set(map(type, instances))) == 1:  # the usual batch: one class
            return [_TableRows(_plan(models.pop()), instances)]
        classes: dict[type, list[Any]] = {}
        for instance in instances:
            classes.setdefault(type(instance), []).append(instance)
        return [_TableRows(_plan(model), members) for model, members in classes.items()]

    def discard(self) -> None:
        for hook in self.hooks:
            hook.close()
        self.hooks.clear()

    async def persist(self, session: AsyncSession) -> None:
        if not self.objects:
            return
        # Each pass below goes class by class and column by column, on values read once per
        # column: per object, Python's loop overhead would cost more than the INSERT itself.
        classes = self.by_class()
        self._check_values(classes)
        dialect = session.get_bind().dialect.name
        # One row per table on SQLite (create() in a loop): the flush inserts each row in one
        # statement, where Core would first read the keys it takes: the flush is cheaper here.
        single = dialect == "sqlite" and all(len(rows.instances) == 1 for rows in classes)
        if dialect == "sqlite" and not single:
            await self._assign_sqlite_keys(session, classes)
        plan = (
            None if single else self._core_insert_order(session, classes, returning=dialect == "postgresql")
        )
        try:
            if plan is None:
                session.add_all([instance for instance, _ in self.objects])
                await session.flush()
            else:
                await self._insert_with_core(session, *plan)
        except DBAPIError as error:
            raise FactoryError(self._explain(error)) from error
        await self._load_what_is_missing(session, classes)

    def _core_insert_order(
        self, session: AsyncSession, classes: list[_TableRows], *, returning: bool
    ) -> tuple[list[_TableRows], list[InstanceState[Any]]] | None:
        """The batch's objects table by table, parents first, if Core can insert them; else None.

        The ORM's unit of work costs ~100 µs per object, ten times the INSERT itself. Core inserts
        the same rows when nothing depends on the flush: no flush or insert events, no many-to-many
        rows or post-updates, no parent the batch does not insert and the session does not hold,
        and every primary key known before the INSERT or read back in order (``returning``).
        Also returns the persistent parents whose only change is the batch a backref appended to
        their collection: they are committed with the batch, as the flush would have.
        """
        sync = session.sync_session
        if any(getattr(sync.dispatch, name) for name in _FLUSH_EVENTS):
            return None
        mine = set(map(id, map(_FIRST, self.objects)))
        parents: dict[InstanceState[Any], bool] = {}  # persistent parent -> commit it with the batch
        for rows in classes:
            plan, instances = rows.plan, rows.instances
            mapper = plan.mapper
            if plan.columns is None or mapper.dispatch.before_insert or mapper.dispatch.after_insert:
                return None
            table = mapper.local_table
            states = list(map(instance_state, instances))
            if any(map(_KEY, states)) or set(map(_SESSION_ID, states)) != {None}:
                return None  # persistent already, or in a session
            for link in plan.links:
                related = [
                    value
                    for value in rows.values(link.key)
                    if value is not None and (not link.uselist or value)
                ]
                if not related:
                    continue
                if link.unsupported:
                    return None
                if link.many_to_one:
                    for value in dict(
                        zip(map(id, related), related, strict=True)
                    ).values():  # each parent once
                        if not self._core_can_link(sync, link, value, table, mine, parents):
                            return None
                else:
                    for value in related:
                        for child in _members(value, link.uselist):
                            if id(child) not in mine or instance_state(child).mapper.local_table is table:
                                return None
            for key in plan.column_keys:
                values = rows.values(key)
                if not _PLAIN_VALUES.issuperset(map(type, values)) and any(
                    isinstance(value, ClauseElement) or hasattr(value, "__clause_element__")
                    for value in values
                ):
                    return None  # a SQL expression as a value: the ORM renders it inline
            for key, column in plan.key_columns:
                if _known_after_insert(column, returning=returning):
                    continue
                values = rows.values(key)
                if _has_none(values) and any(
                    value is None and not _linked(plan, values_of, key)
                    for value, values_of in zip(values, rows.dicts, strict=True)
                ):
                    return None
        tables = classes
        present = {rows.table for rows in tables}
        # Relationships as well as foreign keys order the tables: a primaryjoin may have no ForeignKey.
        depends: set[tuple[Any, Any]] = {
            (link.other_table, rows.table) if link.many_to_one else (rows.table, link.other_table)
            for rows in tables
            for link in rows.plan.links
            if link.other_table in present and link.other_table is not rows.table
        }
        with warnings.catch_warnings(record=True) as cycles:
            warnings.simplefilter("always")
            order = {
                table: n for n, table in enumerate(sort_tables(present, extra_dependencies=list(depends)))
            }
        if cycles:  # tables that point at each other: the ORM orders the rows one by one
            return None
        committed = [parent for parent, commit in parents.items() if commit]
        return sorted(tables, key=lambda rows: order[rows.table]), committed

    @staticmethod
    def _core_can_link(
        session: Session,
        link: _Link,
        value: Any,
        table: Any,
        mine: set[int],
        parents: dict[InstanceState[Any], bool],
    ) -> bool:
        """Whether Core can take a many-to-one parent's key: the batch inserts it before, or the session holds it loaded."""
        parent = instance_state(value)
        if id(value) in mine:
            return parent.mapper.local_table is not table  # rows of one INSERT in an order: the ORM
        if parent.key is None or parent.session_id != session.hash_key:
            return False
        if any(one not in value.__dict__ for one, _ in link.pairs):  # expired: the ORM loads it
            return False
        reverse = link.back_populates
        if reverse and parent not in parents and reverse in value.__dict__:
            history = get_history(value, reverse, passive=PASSIVE_NO_INITIALIZE)
            if history.deleted:  # a one-to-one child replaced: the ORM updates the old one
                return False
            parents[parent] = set(parent.committed_state) <= {reverse} and mine.issuperset(
                map(id, history.added)
            )
        return True

    async def _insert_with_core(
        self, session: AsyncSession, tables: list[_TableRows], parents: list[InstanceState[Any]]
    ) -> None:
        """INSERT each table's rows with one executemany, then make the objects persistent in the session."""
        connection = await session.connection()  # not session.execute(): no autoflush
        # Columns the database fills (server defaults): expired, then loaded like after a flush.
        filled_by_database: list[tuple[list[Any], list[str]]] = []
        for rows in tables:
            attribute = rows.plan.attribute_of
            for sent_columns, instances, params in rows.groups():
                statement = insert(rows.table)
                returned = [
                    c for c in rows.table.primary_key if c.key not in sent_columns and not _prefetched(c)
                ]
                if returned:
                    statement = statement.returning(*returned, sort_by_parameter_order=True)
                result = await connection.execute(statement, params)
                prefetched = result.context.prefetch_cols or ()
                for column in prefetched:  # Python-side defaults Core computed for each row
                    key = attribute.get(column)
                    if key is None:  # a column the class does not map
                        continue
                    for instance, sent in zip(instances, result.context.compiled_parameters, strict=True):
                        instance.__dict__[key] = sent[column.key]
                if returned:
                    for instance, row in zip(instances, result.all(), strict=True):
                        for column, value in zip(returned, row, strict=True):
                            instance.__dict__[attribute[column]] = value
                known = {*sent_columns, *(c.key for c in prefetched), *(c.key for c in returned)}
                unknown = [key for key, column in rows.plan.columns or () if column.key not in known]
                if unknown:
                    filled_by_database.append((instances, unknown))
            rows.give_keys_to_children()
        _make_persistent(session.sync_session, list(map(instance_state, map(_FIRST, self.objects))), parents)
        for instances, keys in filled_by_database:
            for instance in instances:
                session.sync_session.expire(instance, keys)

    def _check_values(self, classes: list[_TableRows]) -> None:
        """Refuse values the database would refuse (or, on SQLite, silently keep) before the INSERT.

        A look column by column first; only if some value may be refused, object by object, so the
        error names the first bad value in the order the objects were made.
        """
        if any(map(_may_refuse, classes)):
            for instance, made_by in self.objects:
                self._check_object(instance, made_by)

    def _check_object(self, instance: Any, made_by: type[ModelFactory[Any]]) -> None:
        plan = _plan(type(instance))
        values = instance.__dict__
        for key, column, length in plan.lengths:
            value = values.get(key)
            if isinstance(value, str) and len(value) > length:
                self._refuse(
                    made_by,
                    key,
                    column,
                    f"is {len(value)} characters long ({value!r}) but the column is {column.type}",
                    f"make the declaration produce at most {length} characters (SQLite does not enforce lengths; "
                    "PostgreSQL does, and harness checks on both)",
                )
        for key, column, kind in plan.enums:
            value = values.get(key)
            if _not_in_enum(value, kind):
                self._refuse(
                    made_by,
                    key,
                    column,
                    f"is {value!r}, not one of {kind.enums}",
                    "declare one of the enum's values",
                )
        for key, column, _ in plan.required:
            if not column.foreign_keys and values.get(key) is None:
                self._refuse(
                    made_by,
                    key,
                    column,
                    "is None but the column is NOT NULL",
                    f"declare a value for {key} (or pass one)",
                )

    def _refuse(
        self, made_by: type[ModelFactory[Any]], key: str, column: Column[Any], problem: str, fix: str
    ) -> NoReturn:
        self.discard()
        msg = (
            f"{self.call}: {made_by.__name__}.{key} {problem} ({column.table.name}.{column.name}; "
            f"{_describe(made_by, key)}). Fix: {fix}."
        )
        raise FactoryError(msg)

    async def _assign_sqlite_keys(self, session: AsyncSession, classes: list[_TableRows]) -> None:
        """Give new rows their integer primary keys before the INSERT, so one executemany inserts them.

        Without them the keys must be read back, which the ORM's flush on SQLite does by inserting
        row by row: it cannot match RETURNING rows to objects there. (PostgreSQL matches them;
        measured, reading keys back there is faster than taking them from the sequence first.)
        """
        waiting: dict[Column[Any], tuple[str, list[dict[str, Any]]]] = {}
        given: dict[Column[Any], Any] = {}  # the largest key passed in explicitly, per column
        for rows in classes:
            serial = rows.plan.serial_key
            if serial is None:
                continue
            key, column = serial
            keys = rows.values(key)
            if _has_none(keys):
                waiting.setdefault(column, (key, []))[1].extend(
                    itertools.compress(rows.dicts, [value is None for value in keys])
                )
                rows.forget(key)
            top = max(filter(_NOT_NONE, keys), default=None)
            if top is not None:
                given[column] = max(given.get(column, top), top)
        for pending in session.new:  # added by the code under test, not flushed yet: max() cannot see them
            serial = _plan(type(pending)).serial_key
            if serial is None or serial[1] not in waiting:
                continue
            key, column = serial
            value = pending.__dict__.get(key)
            if value is None:  # its key comes at the flush: leave this table to the ORM
                del waiting[column]
            else:
                given[column] = max(given.get(column, value), value)
        if not waiting:
            return
        connection = await session.connection()  # not session.execute(): no autoflush of half-built graphs
        for column, (key, dicts) in waiting.items():
            keys = await _next_sqlite_keys(connection, column, len(dicts), given.get(column, 0))
            for values, value in zip(dicts, keys, strict=True):
                values[key] = value  # no attribute events: nothing listens to a new key

    async def _load_what_is_missing(self, session: AsyncSession, classes: list[_TableRows]) -> None:
        """Load what a test would otherwise lazy-load (MissingGreenlet): unset relationships, server defaults."""
        expired: dict[Mapper[Any], list[Any]] = {}
        unloaded: list[tuple[Any, str]] = []
        for rows in classes:
            plan, instances = rows.plan, rows.instances
            for key in plan.scalars:
                unloaded.extend(
                    (instance, key)
                    for instance, values in zip(instances, rows.dicts, strict=True)
                    if key not in values
                )
            stale = list(itertools.compress(instances, map(_EXPIRED, map(instance_state, instances))))
            if stale:
                expired.setdefault(plan.mapper, []).extend(stale)
        for mapper, instances in expired.items():
            (key_column,) = mapper.primary_key if len(mapper.primary_key) == 1 else (None,)
            if key_column is None:
                for instance in instances:  # only what is missing: a bare refresh unloads relationships
                    await session.refresh(instance, list(instance_state(instance).expired_attributes))
                continue
            key = mapper.get_property_by_column(key_column).key
            for start in range(0, len(instances), _REFRESH_CHUNK):
                ids = [getattr(instance, key) for instance in instances[start : start + _REFRESH_CHUNK]]
                await session.execute(select(mapper).where(key_column.in_(ids)))
        if unloaded:
            await session.run_sync(lambda _: [getattr(instance, key) for instance, key in unloaded])

    def _explain(self, error: DBAPIError) -> str:
        said = " ".join(str(error.orig).split())
        column = _failed_column(error)
        lines = [f"{self.call} could not insert its rows. The database said: {said}"]
        if column is not None:
            unique = "unique" in said.lower() or "duplicate key" in said.lower()
            lines.extend(self._field_lines(*column, unique=unique))
        lines.append(f"Fix: {_advice(said)}")
        lines.append(
            "The session's transaction has failed: roll it back (`await session.rollback()`) before using it again."
        )
        statement = " ".join(str(error.statement or "").split())
        if statement:
            lines.append(f"SQL: {statement[:300]}")
        return "\n".join(lines)

    def _field_lines(self, table: str, name: str, *, unique: bool) -> list[str]:
        """Which factory field made the refused column, and which of its values repeat in this call."""
        values: dict[Any, int] = {}
        lines: list[str] = []
        for instance, made_by in self.objects:
            mapper = _plan(type(instance)).mapper
            local = mapper.local_table
            if getattr(local, "name", None) != table or name not in local.c:
                continue
            key = mapper.get_property_by_column(local.c[name]).key
            if not lines:
                lines.append(
                    f"Field: {made_by.__name__}.{key} ({_describe(made_by, key)}; arguments passed in win)."
                )
            value = instance.__dict__.get(key)
            values[value] = values.get(value, 0) + 1
        repeated = {value: count for value, count in values.items() if count > 1}
        if repeated:
            shown = ", ".join(f"{value!r} ({count} times)" for value, count in list(repeated.items())[:5])
            lines.append(f"Values made more than once in this call: {shown}.")
        elif lines and unique:
            lines.append("No value repeats within this call: it clashes with a row already in the table.")
        return lines


@dataclass
class _TableRows:
    """The objects of one mapped class in a batch, and their values read column by column."""

    plan: _ModelPlan
    instances: list[Any]
    dicts: list[dict[str, Any]] = field(init=False)
    _columns: dict[str, list[Any]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.dicts = [instance.__dict__ for instance in self.instances]

    @property
    def table(self) -> Any:
        """The class's own table, where its rows go."""
        return self.plan.mapper.local_table

    def values(self, key: str) -> list[Any]:
        """The attribute's value on each object, None where unset; read once, until `forget`."""
        values = self._columns.get(key)
        if values is None:
            values = self._columns[key] = list(map(dict.get, self.dicts, repeat(key)))
        return values

    def forget(self, key: str) -> None:
        """The attribute is about to change on the objects: read it again next time."""
        self._columns.pop(key, None)

    def groups(self) -> list[tuple[tuple[str, ...], list[Any], list[dict[str, Any]]]]:
        """Rows as the ORM would send them (unset and None values left to defaults), by the columns they set.

        Foreign keys are taken from the parents first (inserted before, or persistent). One
        executemany takes consecutive rows that set the same columns, so keys follow the objects'
        order: a factory's rows usually all set the same ones, and are then built column by
        column, which costs a third of building them row by row.
        """
        dicts = self.dicts
        self._columns.clear()  # parents inserted before gave keys to these objects (one-to-many)
        for link in self.plan.links:
            if link.many_to_one:
                parents = self.values(link.key)
                for one, many in link.pairs:
                    for child, parent in zip(dicts, parents, strict=True):
                        if parent is not None:
                            child[many] = parent.__dict__[one]
        null_when_unset = self.plan.null_when_unset
        names: list[str] = []
        columns: list[list[Any]] = []
        for key, column in self.plan.columns or ():
            values = self.values(key)
            if column.key in null_when_unset or not _has_none(values):
                names.append(column.key)
                columns.append(values)
            elif any(value is not None for value in values) or key in self.plan.none_as_value:
                return self._groups_row_by_row(dicts)  # rows that set different columns
        if not names:  # every column left to its default
            return [((), self.instances, [{} for _ in dicts])]
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        return [(tuple(names), self.instances, rows)]

    def _groups_row_by_row(
        self, dicts: list[dict[str, Any]]
    ) -> list[tuple[tuple[str, ...], list[Any], list[dict[str, Any]]]]:
        groups: list[tuple[tuple[str, ...], list[Any], list[dict[str, Any]]]] = []
        sent = [(key, column.key) for key, column in self.plan.columns or ()]
        null_when_unset = self.plan.null_when_unset
        none_as_value = self.plan.none_as_value
        for instance, values in zip(self.instances, dicts, strict=True):
            get = values.get
            row = {
                name: value
                for key, name in sent
                if (value := get(key)) is not None or (key in none_as_value and key in values)
            }
            for name in null_when_unset:
                if name not in row:
                    row[name] = None
            names = tuple(row)
            if not groups or groups[-1][0] != names:
                groups.append((names, [], []))
            groups[-1][1].append(instance)
            groups[-1][2].append(row)
        return groups

    def give_keys_to_children(self) -> None:
        """One-to-many: the children (in later tables) take this table's new keys."""
        children = [link for link in self.plan.links if not link.many_to_one]
        if not children:
            return
        for instance in self.instances:
            values = instance.__dict__
            for link in children:
                for child in _members(values.get(link.key), link.uselist):
                    child_values = child.__dict__
                    for one, many in link.pairs:
                        child_values[many] = values[one]


def _members(value: Any, uselist: bool) -> Iterable[Any]:
    """The objects a relationship value holds: a collection's members (a dict's values), or the one object."""
    if value is None:
        return ()
    if not uselist:
        return (value,)
    return value.values() if isinstance(value, dict) else value


def _linked(plan: _ModelPlan, values: dict[str, Any], key: str) -> bool:
    """The attribute comes from a parent the batch relates this object to (a foreign key in the primary key)."""
    return any(
        link.many_to_one and values.get(link.key) is not None and any(many == key for _, many in link.pairs)
        for link in plan.links
    )


def _prefetched(column: Column[Any]) -> bool:
    """Core computes this column's default in Python before the INSERT, so the value is known."""
    default = column.default
    return default is not None and (default.is_scalar or default.is_callable)


def _known_after_insert(column: Column[Any], *, returning: bool) -> bool:
    return _prefetched(column) or (returning and column.table.autoincrement_column is column)


def _make_persistent(
    session: Session, states: list[InstanceState[Any]], parents: list[InstanceState[Any]]
) -> None:
    """What ``flush()`` does with objects once their INSERT has run: pending, then persistent.

    These are the two private steps of SQLAlchemy's flush (measured: half the cost of
    ``make_transient_to_detached()`` and ``add()``, whose cascade walks what the batch already
    holds); they also leave the objects where a rollback expunges them, as flushed objects are.
    ``parents`` (changed only by the batch's backrefs) are committed as the flush commits them:
    clean, out of ``session.dirty``.
    """
    for state in states:
        session._save_impl(state)
    session._register_persistent({*states, *parents})


# Values that cannot be SQL expressions, checked first because they are nearly all of them.
_PLAIN_VALUES = frozenset(
    {str, int, float, bool, type(None), decimal.Decimal, dt.datetime, dt.date, uuid.UUID, bytes}
)
_FLUSH_EVENTS = ("before_flush", "after_flush", "after_flush_postexec")
_KEY = attrgetter("key")
_FIRST = itemgetter(0)
_EXPIRED = attrgetter("expired_attributes")
_NOT_NONE = partial(operator.is_not, None)


def _may_refuse(rows: _TableRows) -> bool:
    """Whether a column of these rows holds a value `_Batch._check_object` refuses."""
    plan = rows.plan
    for key, _, length in plan.lengths:
        strings = [value for value in rows.values(key) if isinstance(value, str)]
        if strings and max(map(len, strings)) > length:
            return True
    for key, _, kind in plan.enums:
        if any(_not_in_enum(value, kind) for value in rows.values(key)):
            return True
    return any(not column.foreign_keys and _has_none(rows.values(key)) for key, column, _ in plan.required)


def _not_in_enum(value: Any, kind: sqltypes.Enum) -> bool:
    return value is not None and value not in kind.enums and not isinstance(value, kind.enum_class or ())


def _has_none(values: Iterable[Any]) -> bool:
    """``None in values`` by identity: ``==`` on a SQL expression value builds a clause, not a bool."""
    return any(map(operator.is_, values, repeat(None)))


_SESSION_ID = attrgetter("session_id")


async def _next_sqlite_keys(
    connection: AsyncConnection, column: Column[Any], count: int, given: int
) -> list[int]:
    # SQLite gives later inserts max(rowid) + 1, so these never collide with the code under test's rows.
    top = max(await connection.scalar(select(func.max(column))) or 0, given)
    if column.table.kwargs.get("sqlite_autoincrement"):
        used = await connection.scalar(
            text("SELECT seq FROM sqlite_sequence WHERE name = :name"), {"name": column.table.name}
        )
        top = max(top or 0, used or 0)
    start = (top or 0) + 1
    return list(range(start, start + count))


_building: ContextVar[_Batch | None] = ContextVar("harness_factory_batch", default=None)


def _describe(made_by: type[ModelFactory[Any]], key: str) -> str:
    declaration = made_by._meta.declarations.get(key)
    if declaration is None:
        return "not declared on the factory: passed in, or derived by harness from the column"
    if isinstance(declaration, Faker):
        return f"declared as Faker({declaration.provider!r})"
    if isinstance(declaration, factory.declarations.BaseDeclaration):
        return f"declared as {type(declaration).__name__}(...)"
    return f"declared as the constant {declaration!r}"


def _failed_column(error: DBAPIError) -> tuple[str, str] | None:
    """(table, column) a constraint error names, from SQLite's message, asyncpg's error fields or
    psycopg's diagnostics."""
    cause = getattr(error.orig, "__cause__", None)  # asyncpg's error, under SQLAlchemy's adapter's
    fields = getattr(error.orig, "diag", None) or cause  # psycopg's names them as asyncpg does, with message_
    table = getattr(fields, "table_name", None)
    if table:
        column = getattr(fields, "column_name", None)
        detail = getattr(fields, "detail", None) or getattr(fields, "message_detail", None) or ""
        match = re.search(r"Key \(([^,)]+)", detail)
        if column or match:
            return table, column or match.group(1)  # type: ignore[union-attr]
    match = re.search(r"constraint failed: (\w+)\.(\w+)", str(error.orig))
    return (match.group(1), match.group(2)) if match else None


def _advice(said: str) -> str:
    lowered = said.lower()
    if "unique" in lowered or "duplicate key" in lowered:
        return (
            "a UNIQUE column needs a distinct value on every row: declare it with "
            "factory.Sequence(lambda n: f'...{n}') instead of a constant or a random value, or leave it undeclared."
        )
    if "foreign key" in lowered:
        return "point the foreign key at a row that exists: declare the parent with factory.SubFactory(...) or pass one."
    if "not null" in lowered or "null value" in lowered:
        return "declare a value for the column (or pass one)."
    if "check" in lowered:
        return "make the declaration produce a value the CHECK constraint accepts."
    return "make the declarations produce values the table accepts."


# -- One factory creation at a time per session ---------------------------------------------------
