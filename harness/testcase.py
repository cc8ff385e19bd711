"""pytest-native base test classes: the test's session, app client, API mocks and clock as attributes.

Subclass `IntegrationTest` (or `RealCommitsTest`) in a test module. Methods still take fixtures
as arguments, async tests need no ``@pytest.mark.asyncio``, and an async ``setup_class_data``
classmethod fills data shared by the class's tests, the async analogue of Django's
``setUpTestData``. The classes are a thin layer over the plugin's fixtures (``db_session``,
``app_client``, ``clock``), so attributes and method arguments are the same objects.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest
import pytest_asyncio
from sqlalchemy import inspect as inspect_instance
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import InstanceState

from harness import plugin
from harness._where import shown_as
from harness.apis import MockApi
from harness.client import AppClient
from harness.clock import Clock
from harness.db import EngineAdoption, RollbackScope, TestDatabase, commit_scope, rollback_scope
from harness.exceptions import MockApiError, ScopeError
from harness.queries import QueryLog, assert_max_queries, assert_num_queries
from harness.timing import assert_completes_within, assert_not_slower_than, assert_runs_within, measure

__all__ = ["IntegrationTest", "RealCommitsTest"]

A = TypeVar("A", bound=MockApi)
_UNSET = object()

_NO_PLUGIN = (
    "{cls} is a harness base class, but the harness pytest plugin is not loaded, so it has no database "
    "or fixtures. harness registers the plugin when installed (entry point `harness`): install pytest-async-harness in the "
    "environment that runs pytest, remove `-p no:harness`, or add `pytest_plugins = ['harness.plugin']` to "
    "your top-level conftest.py."
)


@dataclass
class _ClassData:
    """What a class's ``setup_class_data`` made: its session, and the attributes it set."""

    session: AsyncSession
    engine: AsyncEngine
    attributes: dict[str, Any]


def _stored_instance(value: object) -> bool:
    """Whether ``value`` is a mapped object with a row (persistent or detached), not a Select or a class."""
    state = inspect_instance(value, raiseerr=False)
    return isinstance(state, InstanceState) and state.key is not None


async def _fresh_copy(session: AsyncSession, value: Any, name: str) -> Any:
    """``value`` with every stored mapped object in it merged into ``session``: fresh instances, no query.

    Mapped objects are found at the top level and inside lists, tuples (named ones too), sets,
    dicts (keeping their type, such as defaultdict) and dataclasses; other values are shared as is.
    """
    if _stored_instance(value):
        try:
            return await session.merge(value, load=False)
        except InvalidRequestError as error:
            msg = (
                f"setup_class_data's {name} ({type(value).__name__}) cannot be handed to the test as a fresh "
                f"instance: {error}. Keep shared objects unchanged outside tests, and flush them in the hook."
            )
            raise ScopeError(msg) from None
    if isinstance(value, list | set | frozenset):
        return type(value)([await _fresh_copy(session, item, name) for item in value])
    if isinstance(value, tuple):
        items = [await _fresh_copy(session, item, name) for item in value]
        return value._make(items) if hasattr(value, "_make") else type(value)(items)
    if isinstance(value, dict):
        copied = copy.copy(value)  # keeps the type: defaultdict, OrderedDict
        for key, item in value.items():
            copied[key] = await _fresh_copy(session, item, name)
        return copied
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: await _fresh_copy(session, getattr(value, field.name), name)
            for field in dataclasses.fields(value)
            if field.init
        }
        return dataclasses.replace(value, **changes)
    return value


class IntegrationTest:
    """Base class for test classes: each test gets the test's session, app client, mocks and clock.

    Every test runs in a rollback scope (``self.db`` is its `AsyncSession`, the same object as the
    ``db_session`` fixture), so whatever it writes, commits included, is gone afterwards. Async
    test methods need no marker, and methods still take fixtures as arguments.

    - ``self.client``: the `AppClient` of the ``harness_app`` fixture (the ``app_client`` fixture).
    - ``self.clock``: the frozen `Clock`, when the class or test has ``@pytest.mark.clock(...)``.
    - ``self.api(SmsApi)``: the active mock of each class listed in ``mock_apis``.
    - ``self.assert_max_queries(n)`` and friends: query and timing budgets on the test's session.

    ``setup_class_data``, an async classmethod, runs once per class in a class rollback scope.
    Attributes it sets on the class are shared data: each test runs in a savepoint on top of it
    and sees fresh instances of the mapped objects among them, in its own session, so what one
    test changes is gone for the next. This needs an event loop that outlives a test: set
    ``asyncio_default_fixture_loop_scope`` and ``asyncio_default_test_loop_scope`` to ``session``
    (or ``class``).

    Usage:

    ```python
    class TestCampaigns(IntegrationTest):
        mock_apis = (SmsApi,)

        @classmethod
        async def setup_class_data(cls, session: AsyncSession) -> None:
            cls.campaign = await CampaignFactory.create(contacts=10)

        async def test_send(self) -> None:
            response = await self.client.post(f"/api/campaigns/{self.campaign.id}/send")
            assert response.status_code == 202
            self.api(SmsApi).send_message.assert_called_times(10)
    ```
    """

    real_commits: ClassVar[bool] = False
    """True (as `RealCommitsTest` sets it): the tests commit for real, in a `commit_scope()`."""
    mock_apis: ClassVar[tuple[type[MockApi], ...]] = ()
    """The `MockApi` classes active in every test of the class; `self.api(Cls)` is each one's mock."""

    db: AsyncSession
    """The test's session (`db_session`): its writes, commits included, end with the test."""
    _client: AppClient | None = None
    _clock: Clock | None = None
    _apis: dict[type[MockApi], MockApi]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hook = cls.__dict__.get("setup_class_data")
        if hook is not None:
            function = hook.__func__ if isinstance(hook, classmethod | staticmethod) else hook
            if not inspect.iscoroutinefunction(function):
                msg = (
                    f"{cls.__qualname__}.setup_class_data must be an async classmethod: "
                    "`@classmethod` then `async def setup_class_data(cls, session): ...`."
                )
                raise TypeError(msg)
            if not isinstance(hook, classmethod):
                cls.setup_class_data = classmethod(function)  # type: ignore[method-assign,assignment]
        for name in dir(cls):
            # No per-method decorator, in strict mode too (mixins' tests included); sync tests stay
            # unmarked (a mark on them warns).
            value = inspect.getattr_static(cls, name)
            if name.startswith("test") and inspect.iscoroutinefunction(value):
                marks = [mark.name for mark in getattr(value, "pytestmark", ())]
                if "asyncio" not in marks:
                    setattr(cls, name, pytest.mark.asyncio(value))

    @classmethod
    async def setup_class_data(cls, session: AsyncSession) -> None:
        """Make data shared by the class's tests: set it as class attributes (override; async)."""

    @classmethod
    def has_class_data(cls) -> bool:
        """Whether the class (or a base) overrides `setup_class_data`."""
        return cls.setup_class_data.__func__ is not IntegrationTest.setup_class_data.__func__  # type: ignore[attr-defined]

    # -- attributes ---------------------------------------------------------------------------

    @property
    def client(self) -> AppClient:
        """The test's `AppClient` (the ``app_client`` fixture)."""
        if self._client is None:
            msg = (
                f"{type(self).__name__}.client needs the app under test: define a `harness_app` fixture in "
                "conftest.py that returns it (e.g. `return create_app()`)."
            )
            raise pytest.UsageError(msg)
        return self._client

    @property
    def clock(self) -> Clock:
        """The test's frozen `Clock`, present when the class or test is marked ``@pytest.mark.clock``."""
        if self._clock is None:
            msg = (
                f"{type(self).__name__}.clock is set only while time is frozen: mark the class or the test "
                "with @pytest.mark.clock(...) (e.g. @pytest.mark.clock('2024-01-15 10:00 America/New_York'))."
            )
            raise pytest.UsageError(msg)
        return self._clock

    def api(self, api_class: type[A]) -> A:
        """The active mock of ``api_class``, one of the classes in ``mock_apis``."""
        mock = self._apis.get(api_class)
        if mock is None:
            listed = ", ".join(cls.__name__ for cls in self.mock_apis) or "nothing"
            msg = (
                f"{api_class.__name__} is not among {type(self).__name__}.mock_apis ({listed}): add it, "
                f"e.g. `mock_apis = ({api_class.__name__},)`."
            )
            raise LookupError(msg)
        return mock  # type: ignore[return-value]  # of api_class: checked when the test was set up

    def assert_max_queries(self, maximum: int) -> AbstractContextManager[QueryLog]:
        """`harness.assert_max_queries` on the test's session."""
        return assert_max_queries(self.db, maximum)

    def assert_num_queries(self, expected: int) -> AbstractContextManager[QueryLog]:
        """`harness.assert_num_queries` on the test's session."""
        return assert_num_queries(self.db, expected)

    assert_completes_within = staticmethod(assert_completes_within)
    assert_not_slower_than = staticmethod(assert_not_slower_than)
    assert_runs_within = staticmethod(assert_runs_within)
    measure = staticmethod(measure)

    # -- fixtures -----------------------------------------------------------------------------

    @pytest_asyncio.fixture(scope="class")
    @classmethod
    async def _harness_class_data(
        cls, harness_database: TestDatabase, _harness_adoption: EngineAdoption
    ) -> AsyncIterator[_ClassData]:
        engine = harness_database.engine
        assert engine is not None
        before = dict(vars(cls))
        scope = commit_scope(engine) if cls.real_commits else rollback_scope(engine)
        try:
            async with scope as session:
                await cls.setup_class_data(session)
                await (session.commit() if cls.real_commits else session.flush())
                if isinstance(scope, RollbackScope):  # between tests, nothing may write into the class's data
                    scope.accepts_connections = False
                made = {
                    name: value
                    for name, value in vars(cls).items()
                    if name not in before or before[name] is not value
                }
                yield _ClassData(session, engine, made)
        finally:
            for name in [name for name, value in vars(cls).items() if before.get(name, _UNSET) is not value]:
                if name in before:  # objects of a session that is gone: back to the class body's value
                    setattr(cls, name, before[name])
                else:
                    delattr(cls, name)

    @pytest.fixture
    def _harness_scope_parent(self, request: pytest.FixtureRequest) -> _ClassData | AsyncEngine:
        if type(self).has_class_data():
            data: _ClassData = request.getfixturevalue("_harness_class_data")
            return data
        engine: AsyncEngine = request.getfixturevalue("db_engine")
        return engine

    @pytest_asyncio.fixture
    async def db_session(
        self, request: pytest.FixtureRequest, _harness_scope_parent: _ClassData | AsyncEngine
    ) -> AsyncIterator[AsyncSession]:
        """The test's session: in a savepoint on top of the class data, or a scope of its own."""
        parent = _harness_scope_parent
        options = plugin.marker_options(request, "db_session")
        real_commits = options.pop("real_commits", self.real_commits)
        if isinstance(parent, AsyncEngine):
            scope: Any = (
                commit_scope(parent, **options) if real_commits else rollback_scope(parent, **options)
            )
        else:
            scope = (
                commit_scope(parent.engine, **options)
                if real_commits
                else rollback_scope(parent.session, **options)
            )
        async with scope as session:
            if not isinstance(parent, AsyncEngine):
                for name, value in parent.attributes.items():
                    setattr(self, name, await _fresh_copy(session, value, f"cls.{name}"))
            yield session

    @pytest.fixture(autouse=True)
    def _harness_setup(self, request: pytest.FixtureRequest) -> Iterator[None]:
        __tracebackhide__ = True
        _check_plugin(request)
        self.db = request.getfixturevalue("db_session")
        self._apis, started = {}, []
        for api_class in self.mock_apis:  # before the app client: its lifespan may call them
            fixture = plugin.api_fixture_name(api_class)
            with contextlib.suppress(pytest.FixtureLookupError):  # a registered fixture: the test's own mock
                self._apis[api_class] = _checked_mock(request.getfixturevalue(fixture), api_class, fixture)
            if api_class not in self._apis:
                self._apis[api_class] = api_class().start()
                started.append(self._apis[api_class])
        try:
            if request.getfixturevalue("harness_app") is not plugin.NO_APP:
                self._client = request.getfixturevalue("app_client")
            if request.node.get_closest_marker("clock") is not None:
                self._clock = request.getfixturevalue("clock")
            yield
        finally:
            _stop_all(started, check=not plugin.call_failed(request.node))


def _stop_all(mocks: list[MockApi], *, check: bool) -> None:
    """Stop every mock, even after one fails its checks; then raise what failed."""
    __tracebackhide__ = True
    failures = []
    for mock in reversed(mocks):
        try:
            mock.stop(check=check)
        except Exception as error:  # each mock's failure is kept
            failures.append(error)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        # pytest before 9.1 crashes (INTERNALERROR) on a group whose members show no frame at all.
        __tracebackhide__ = False
        msg = f"{len(failures)} mocks failed their checks"
        raise ExceptionGroup(msg, failures)


class RealCommitsTest(IntegrationTest):
    """`IntegrationTest` for code that needs several connections: its commits are real.

    Background workers, ``asyncio.gather`` over separate sessions and anything else that opens its
    own connections cannot share a rollback scope's single connection. Here ``self.db`` and the
    app's bound sessionmakers work on the engine and commit for real; after each test (and after
    the class, for ``setup_class_data``) harness deletes the rows added since, only in the tables
    that changed (`harness.commit_scope`). Slower than rollback: use it only where needed.
    """

    real_commits = True


def _check_plugin(request: pytest.FixtureRequest) -> None:
    if not request.config.pluginmanager.is_registered(plugin):
        raise pytest.UsageError(_NO_PLUGIN.format(cls=request.cls.__name__ if request.cls else "This class"))


def _checked_mock(mock: object, api_class: type[A], fixture: str) -> A:
    """The `fixture`'s value, if it is an `api_class`; else an error that says what it is instead."""
    if isinstance(mock, api_class):
        return mock
    mocked = type(mock)
    msg = (
        f"The `{fixture}` fixture gave a {_where(mocked)}, where mock_apis expects a {_where(api_class)}: "
        f"make `{fixture}` with register_api({api_class.__name__}), or give your own fixture another name."
    )
    if mocked.__qualname__ == api_class.__qualname__ and _source(mocked) == _source(api_class):
        msg = (
            f"{api_class.__name__} exists twice: the `{fixture}` fixture mocks {_where(mocked)}, and the test "
            f"names {_where(api_class)}. A MockApi defined in conftest.py and imported from a test module is "
            "imported twice (pytest imports conftest.py under a module name of its own). Define "
            f"{api_class.__name__} in a module of its own, such as tests/mocks.py, and import it from there "
            "in conftest.py and in the tests."
        )
    raise MockApiError(msg)


def _source(cls: type) -> str:
    try:
        return shown_as(inspect.getsourcefile(cls) or "?")
    except (TypeError, OSError):  # a built-in class, or one defined in no file
        return "?"


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__} ({_source(cls)})"
