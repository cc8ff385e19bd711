"""The pytest plugin: command-line options, ini keys and fixtures over harness's library API.

Fixture layers (override the ``harness_*`` ones in conftest.py):

```text
harness_database_url  harness_schema  harness_seed  harness_engine_options     session · configuration
    └── harness_database                                         session · TestDatabase, built once
          └── _harness_adoption  (harness_engines)               session · the app's engines adopted
                └── db_engine                                    function · the test database's AsyncEngine
                      └── db_session                             function · AsyncSession in a rollback scope
                            ├── seeded                           function · the seed's objects, in db_session
                            └── app_client  (harness_app, harness_app_bind)
```

``harness_database`` is a plain (synchronous) session fixture: the database is built on a private
event loop, so it works whatever loop scope pytest-asyncio gives the tests. ``db_session`` runs in
the loop of async fixtures (``asyncio_default_fixture_loop_scope``); a test that runs in another
loop is a start-up error, because a connection cannot move between loops. Pooled asyncpg
connections are closed when their loop ends (see `harness.db.loops`): per test with
function-scoped loops, once per session with a session loop (the fast setting on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, NoReturn, TypeVar

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from harness.apis import MockApi
from harness.client import AppClient, AppLifespan, app_client
from harness.clock import Clock, freeze_time, recording_clocks, running_clocks, stop_clocks
from harness.clock import explain as explain_clock_error
from harness.db import (
    DatabaseGuard,
    EngineAdoption,
    Schema,
    TestDatabase,
    adopt_engines,
    block_databases,
    commit_scope,
    normalize_url,
    record_engine_sites,
    rollback_scope,
    stop_recording_engine_sites,
)
from harness.db.admin import lost_connection
from harness.db.explain import explain as explain_database_error
from harness.db.seed import Seeded, SeedFunction, load_seeded
from harness.exceptions import ClockError, HarnessError, NetworkBlockedError, SchemaError
from harness.factories import ModelFactory, reseed_on_first_use
from harness.network import NetworkGuard, block_network
from harness.postgres import ThrowawayPostgres
from harness.settings import SETTINGS, add_settings, export, setting, setting_source
from harness.summary import CATEGORIES, RunSummary, record_categories

F = TypeVar("F", bound=type[ModelFactory[Any]])
A = TypeVar("A", bound=type[MockApi])

_SEED = pytest.StashKey[int]()
_RUN_ID = pytest.StashKey[str]()  # names this run's databases; the controller's under xdist
_TEMPLATES_USED = pytest.StashKey[
    set[tuple[str | None, str]]
]()  # (URL, name) of templates xdist workers cloned
_STARTED_URL = pytest.StashKey[str]()  # the URL of the server --harness-start-postgres started
_NETWORK_GUARD = pytest.StashKey[NetworkGuard]()
_DATABASE_GUARD = pytest.StashKey[DatabaseGuard]()
_CLOCKS_STARTED = pytest.StashKey[list[Clock]]()  # by the test's body, still running when it returned
_CALL_ERROR = pytest.StashKey["BaseException | None"]()
_DATABASE_HOST = pytest.StashKey[str]()
_CURRENT_NETWORK_GUARD = pytest.StashKey[NetworkGuard]()
_BLOCKED_SEEN = pytest.StashKey[int]()  # attempts the network guard had refused when the test's call ended
_CALL_FAILED = pytest.StashKey[bool]()
_REFUSED = pytest.StashKey[str]()
_DATABASE = pytest.StashKey[TestDatabase]()  # this run's, once built
_SERVER_GONE = pytest.StashKey[bool]()  # the run stopped: the database server stopped answering
_USES_HARNESS = pytest.StashKey[bool]()  # asks for harness's database, app client or clock
_LOOP_SCOPES = ("function", "class", "module", "package", "session")
_LOOP_MISMATCH = """\
{nodeid} runs in a {test_scope!r}-scoped event loop, but harness's db_session runs in the \
{fixture_scope!r}-scoped loop of async fixtures, and a database connection cannot move between event loops.
Give fixtures and tests the same loop: set asyncio_default_fixture_loop_scope = "{test_scope}" (and \
asyncio_default_test_loop_scope = "{test_scope}") in your pytest configuration, or remove loop_scope from the \
test's asyncio marker."""

_CLASS_DATA_LOOP = """\
{cls} defines setup_class_data ({nodeid}), whose data lives on one database connection across the class's \
tests, but its tests run in a {test_scope!r}-scoped event loop and fixtures in a {fixture_scope!r}-scoped one, \
and a connection cannot move between event loops.
Run them in a loop that outlives a test: set asyncio_default_fixture_loop_scope = "session" and \
asyncio_default_test_loop_scope = "session" in your pytest configuration ("class" works too)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    add_settings(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before conftest.py files import the app: its engines' creation sites go into guard messages.
    record_engine_sites()


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_recording_engine_sites()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "clock(when=None, *, tz=None, tz_offset=0, tick=False, backend=None): freeze time for the test at "
        "`when` (a string may end with a zone name); the `clock` fixture, requested for you, is the clock.",
    )
    config.addinivalue_line(
        "markers",
        "allow_network(*hosts): let the test reach these hosts, IP addresses or CIDR networks; "
        "without arguments, turn the network guard off for the test.",
    )
    config.addinivalue_line(
        "markers",
        "allow_database(*databases): let the test reach these databases (URLs, database names or SQLite file "
        "names) although harness did not create them; without arguments, turn the database guard off for the test.",
    )
    config.addinivalue_line(
        "markers",
        "db_session(**options): options of the test's session, as rollback_scope() takes them "
        "(expire_on_commit=True, populate_existing=True, ...); real_commits=True makes it a commit_scope().",
    )
    config.addinivalue_line(
        "markers",
        "app_client(**options): options of the test's app client, as harness.app_client() takes them "
        "(lifespan=False, base_url=..., headers=...).",
    )
    for each in SETTINGS:  # a flag or number the environment cannot mean stops the run now, not mid-way
        setting(config, each.name)
    lifespan = setting(config, "harness_app_lifespan")
    if lifespan not in ("shared", "test", "off"):
        msg = f"{lifespan!r} is not a valid harness_app_lifespan. Valid values: shared, test, off."
        raise pytest.UsageError(msg)
    config.addinivalue_line(
        "markers",
        "category(*names): the test's categories in the run summary (--harness-summary): "
        + ", ".join(CATEGORIES)
        + ", or one added with the harness_categories ini key.",
    )
    for name in ("harness_timing_slack", "harness_timing_undecided"):
        export(config, name)
    _start_postgres(config)
    with contextlib.suppress(HarnessError):  # a bad URL is reported when the database is built
        # The driver is imported now, before any clock freezes: asyncpg imported under freezegun
        # fails on its fake datetime class.
        normalize_url(_database_url(config)[0])
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    if (path := setting(config, "harness_summary")) and not workerinput:  # xdist: the controller writes it
        summary = RunSummary(path, setting(config, "harness_summary_compare"))
        config.pluginmanager.register(summary, "harness-summary")
    elif setting(config, "harness_summary_compare") and not path:
        msg = "--harness-summary-compare needs --harness-summary=PATH: the summary it compares is this run's."
        raise pytest.UsageError(msg)
    seed = setting(config, "harness_seed")
    if seed is None:
        seed = workerinput.get("harness_seed", secrets.randbits(32))
    config.stash[_SEED] = seed
    config.stash[_RUN_ID] = workerinput.get("harness_run_id") or uuid.uuid4().hex
    if config.pluginmanager.hasplugin("xdist") and not workerinput:
        config.pluginmanager.register(_XdistController(config), "harness-xdist-controller")


class _XdistController:
    """Hands the controller's seed and run id to every xdist worker, so all of them replay alike and
    share one set of database names; drops the template once every worker is done with it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["harness_seed"] = self.config.stash[_SEED]
        node.workerinput["harness_run_id"] = self.config.stash[_RUN_ID]

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        if used := getattr(node, "workeroutput", {}).get("harness_template"):
            self.config.stash.setdefault(_TEMPLATES_USED, set()).add((used[0], used[1]))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if setting(self.config, "harness_reuse_db"):
            return
        for url, name in self.config.stash.get(_TEMPLATES_USED, set()):
            with contextlib.suppress(HarnessError):  # a worker reported what went wrong with the database
                _run_database(self.config, url, name=name).drop_sync()


def _randomly_reseeds(config: pytest.Config) -> bool:
    # pytest-randomly reseeds factory-boy and Faker before every test itself; its seed then rules.
    return config.pluginmanager.hasplugin("randomly") and bool(config.getoption("randomly_reset_seed", True))


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _randomly_reseeds(config):
        seeded = "harness: factory data seeded by pytest-randomly (replay with its --randomly-seed)"
    else:
        seed = config.stash[_SEED]
        seeded = f"harness: factory data seed {seed} (replay with --harness-seed={seed})"
    return [_database_line(config), seeded]


def _database_url(config: pytest.Config) -> tuple[str | None, str]:
    """The URL test databases are derived from, and where it came from (the harness_database_url
    setting). None: an embedded SQLite file per worker."""
    if url := config.stash.get(_STARTED_URL, None):
        return url, f"a throwaway server harness started ({setting_source(config, 'harness_start_postgres')})"
    if url := setting(config, "harness_database_url"):
        return str(url), f"URL from {setting_source(config, 'harness_database_url')}"
    return None, (
        "embedded SQLite: no URL given (--harness-database-url, $HARNESS_DATABASE_URL or the "
        "harness_database_url ini key)"
    )


def _start_postgres(config: pytest.Config) -> None:
    """--harness-start-postgres: a server for the run, started by the controller; workers read its URL."""
    if not setting(config, "harness_start_postgres") or hasattr(config, "workerinput"):
        return
    url, source = _database_url(config)
    if url:
        msg = (
            f"--harness-start-postgres starts a PostgreSQL server for the run, and a database URL is given too "
            f"({source}). Give one of them."
        )
        raise pytest.UsageError(msg)
    server = ThrowawayPostgres(
        state=os.path.join(tempfile.gettempdir(), f"harness-postgres-run-{os.getpid()}.json")
    )
    try:
        server_url = server.start()
    except HarnessError as error:
        msg = f"--harness-start-postgres: {error}"
        raise pytest.UsageError(msg) from None
    config.add_cleanup(server.stop)
    # The test database is named after the project, as the embedded SQLite default is.
    url = f"{server_url.rsplit('/', 1)[0]}/{_default_name(config, None)}"
    config.stash[_STARTED_URL] = url
    previous = os.environ.get("HARNESS_DATABASE_URL")
    os.environ["HARNESS_DATABASE_URL"] = url  # xdist workers, started after this, inherit it

    def restore() -> None:
        if previous is None:
            os.environ.pop("HARNESS_DATABASE_URL", None)
        else:
            os.environ["HARNESS_DATABASE_URL"] = previous

    config.add_cleanup(restore)


def _database_line(config: pytest.Config) -> str:
    url, source = _database_url(config)
    try:
        database = _run_database(config, url)
    except HarnessError as error:  # the run stops on it with the whole message when the database is built
        return f"harness: test database refused ({source}): {str(error).splitlines()[0]}"
    secrets_hidden = {key: "***" for key in database.url.query if "password" in key.lower()}
    where = database.url.update_query_dict(secrets_hidden).render_as_string(hide_password=True)
    workers = (
        ", with _gw0, _gw1, … added per xdist worker" if getattr(config.option, "numprocesses", None) else ""
    )
    return f"harness: test database {where}{workers}; {source}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if (refused := item.stash.get(_REFUSED, None)) is not None:
        pytest.fail(refused, pytrace=False)
    if item.stash.get(_USES_HARNESS, False) and _nothing_runs(item):  # markers are all set by now
        pytest.fail(_STRICT_MODE.format(name=item.name), pytrace=False)
    randomly = _randomly_reseeds(item.config)
    # Per test, not per run: a test's data does not depend on which tests ran before it. Applied
    # when the test first uses a factory: a test that uses none keeps its random state.
    seed = f"{item.config.getoption('randomly_seed') if randomly else item.config.stash[_SEED]}:{item.nodeid}"
    reseed_on_first_use(seed, factory_boy=not randomly)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from harness.testcase import IntegrationTest  # the base classes are built on this module

    fixture_scope = _fixture_loop_scope(config)
    for item in items:
        try:
            _check_item(item, fixture_scope, IntegrationTest)
        except pytest.UsageError as error:
            if not hasattr(config, "workerinput"):
                raise
            # An xdist worker cannot stop the run with a message (it becomes an INTERNALERROR):
            # the test fails with it instead.
            item.stash[_REFUSED] = str(error)


def _check_item(item: pytest.Item, fixture_scope: str, base: type[Any]) -> None:
    _network_guard(item)  # a bad allow_network entry stops the run before any test
    record_categories(item)  # and so does an unknown category
    fixturenames = getattr(item, "fixturenames", None)
    if item.get_closest_marker("clock") and fixturenames is not None and "clock" not in fixturenames:
        fixturenames.insert(0, "clock")  # the marker alone freezes time, before other fixtures run
    cls = getattr(item, "cls", None)
    base_class = isinstance(cls, type) and issubclass(cls, base)
    class_data = base_class and cls.has_class_data()  # type: ignore[union-attr]
    test_scope = _test_loop_scope(item)
    if class_data and (fixture_scope == "function" or test_scope != fixture_scope):
        raise pytest.UsageError(
            _CLASS_DATA_LOOP.format(
                cls=cls.__qualname__,  # type: ignore[union-attr]
                nodeid=item.nodeid,
                test_scope=test_scope,
                fixture_scope=fixture_scope,
            )
        )
    _refuse_async_fixtures_in_plain_tests(item)
    uses_database = base_class or bool({"db_engine", "db_session", "app_client"} & set(fixturenames or ()))
    item.stash[_USES_HARNESS] = uses_database or "clock" in (fixturenames or ())
    if uses_database and fixturenames is not None and "clock" in fixturenames:
        # Built before time freezes: a driver imported under freezegun sees its fake datetime, and
        # class data would depend on which test of the class came first.
        names = ("harness_database", "_harness_adoption")
        for name in (*names, "_harness_class_data") if class_data else names:
            if name in fixturenames:
                fixturenames.remove(name)
            fixturenames.insert(fixturenames.index("clock"), name)
    # db_engine alone serves any loop (its pooled connections end with theirs); a session does not.
    in_fixture_loop = base_class or bool({"db_session", "app_client"} & set(fixturenames or ()))
    if not in_fixture_loop or not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return
    if (refusal := _other_runner(item)) is not None:
        item.stash[_REFUSED] = refusal  # only this test is wrong: it fails at setup
        return
    if test_scope != fixture_scope:
        raise pytest.UsageError(
            _LOOP_MISMATCH.format(nodeid=item.nodeid, test_scope=test_scope, fixture_scope=fixture_scope)
        )


_OTHER_LOOP_ERRORS = ("attached to a different loop", "bound to a different event loop")


def _explain_other_loops(item: pytest.Item, error: BaseException) -> None:
    """A test that failed on an object of another event loop: name its async fixtures in other loops.

    Not refused up front: a fixture in a session loop that returns plain data is fine, one that
    yields an open connection is not, and only the failure tells them apart.
    """
    errors = [error, error.__cause__, error.__context__]
    if not any(text in str(each) for each in errors if each is not None for text in _OTHER_LOOP_ERRORS):
        return
    info = getattr(item, "_fixtureinfo", None)
    test_scope = _test_loop_scope(item)
    default = _asyncio_ini(item.config, "asyncio_default_fixture_loop_scope")
    others = []
    for name in getattr(item, "fixturenames", ()):
        if info is None or not (definitions := info.name2fixturedefs.get(name)):
            continue
        function = definitions[-1].func
        if not (inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)):
            continue
        # pytest-asyncio's rule: the fixture's loop_scope, else the ini default, else its own scope.
        loop = getattr(function, "_loop_scope", None) or (
            default if default in _LOOP_SCOPES else definitions[-1].scope
        )
        if loop != test_scope:
            code = function.__code__
            where = f"{os.path.relpath(code.co_filename, item.config.rootpath)}:{code.co_firstlineno}"
            others.append(f"{name} (in a {loop!r}-scoped loop, {where})")
    if others:
        error.add_note(
            f"harness: {item.name} runs in a {test_scope!r}-scoped event loop, and async fixtures it uses run in "
            f"other loops: {', '.join(others)}. What a fixture opens in its loop (a connection, a session, a "
            "client, a lock) cannot be awaited in another. Give those fixtures the test's loop "
            f'(@pytest_asyncio.fixture(loop_scope="{test_scope}")), or run fixtures and tests in one loop: '
            'asyncio_default_fixture_loop_scope = "session" and asyncio_default_test_loop_scope = "session".'
        )


def _other_runner(item: pytest.Item) -> str | None:
    """Why pytest-asyncio, whose event loop harness's sessions live on, will not run this test."""
    if not item.config.pluginmanager.has_plugin("asyncio"):
        return (
            f"{item.name} asks for harness's db_session or app_client, which run on pytest-asyncio's event loop, "
            "and pytest-asyncio is not loaded (-p no:asyncio?). Load it (remove -p no:asyncio), or use "
            "harness's library API (rollback_scope, app_client) inside the test, on the loop that runs it."
        )
    if item.get_closest_marker("anyio") or "anyio_backend" in getattr(item, "fixturenames", ()):
        return (
            f"{item.name} runs under anyio's pytest plugin (@pytest.mark.anyio or anyio_backend), on a loop of "
            "anyio's, and harness's db_session and app_client live on pytest-asyncio's: it would fail with "
            "'Future attached to a different loop'. Let pytest-asyncio run it: remove the anyio mark (from "
            "the test, its class and the module's pytestmark) and the anyio_backend fixture; with asyncio_mode = "
            "auto every async test then runs on asyncio (in strict mode, mark it @pytest.mark.asyncio)."
        )
    return None


# Fixtures a plain def test can do nothing with (db_engine's url, a factory's build() are sync).
_AWAITED_FIXTURES = {"db_session": "an AsyncSession", "app_client": "an AppClient"}


def _refuse_async_fixtures_in_plain_tests(item: pytest.Item) -> None:
    function = getattr(item, "obj", None)
    function = getattr(getattr(function, "hypothesis", None), "inner_test", function)  # @given wraps the test
    if not isinstance(item, pytest.Function) or function is None or inspect.iscoroutinefunction(function):
        return
    try:
        asked = [name for name in inspect.signature(function).parameters if name in _AWAITED_FIXTURES]
    except (TypeError, ValueError):  # a callable without a signature: pytest will say so
        return
    if asked:
        # Failing at setup, not stopping the run: only this test is wrong.
        item.stash[_REFUSED] = (
            f"{item.name} is a plain def but asks for {asked[0]} ({_AWAITED_FIXTURES[asked[0]]}), whose methods must be "
            f"awaited: declare it `async def {item.originalname}(...)`."
        )


_STRICT_MODE = """\
{name} is an async def test that nothing would run: pytest-asyncio is in its strict mode (the default), \
where it runs only tests marked @pytest.mark.asyncio, and pytest's own message would ask you to install it.
Let pytest-asyncio run every async test, as harness's quick start does, in your pytest configuration:
    asyncio_mode = auto
    asyncio_default_fixture_loop_scope = session
    asyncio_default_test_loop_scope = session
or mark the test @pytest.mark.asyncio."""


def _nothing_runs(item: pytest.Item) -> bool:
    # A coroutine test that no plugin takes (pytest-asyncio's strict mode without its marker) fails
    # with pytest's advice to install an async plugin, which is installed. anyio runs the tests
    # marked for it or asking for anyio_backend; pytest-trio the ones marked trio (in trio_mode
    # too, by the time tests are set up).
    if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return False
    if any(item.get_closest_marker(name) for name in ("asyncio", "anyio", "trio")):
        return False
    return "anyio_backend" not in getattr(item, "fixturenames", ())


def _database_guard(item: pytest.Item) -> DatabaseGuard | None:
    marker = item.get_closest_marker("allow_database")
    if not setting(item.config, "harness_block_databases") or (marker is not None and not marker.args):
        return None
    return block_databases(allow=[str(database) for database in marker.args] if marker else [])


def _host_of(url: str) -> str | None:
    try:
        return normalize_url(url).host
    except HarnessError:  # a bad URL is reported when the database is built, with the password hidden
        return None


def _network_guard(item: pytest.Item) -> NetworkGuard | None:
    marker = item.get_closest_marker("allow_network")
    if not setting(item.config, "harness_block_network") or (marker is not None and not marker.args):
        return None
    allowed = [str(host) for host in marker.args] if marker else []
    url, _ = _database_url(item.config)
    # A remote database server the user allowed (harness_allow_remote_database), on every port; a
    # local one is loopback, which the guard always lets through; any other is refused anyway.
    if url and _remote_allowed(item.config) and (host := _host_of(url)):
        allowed.append(host)
    if host := item.config.stash.get(_DATABASE_HOST, None):
        allowed.append(host)  # the same, named by an overridden harness_database_url fixture
    try:
        return block_network(allow=allowed)
    except ValueError as error:
        msg = f"{item.nodeid}: @pytest.mark.allow_network: {error}"
        raise pytest.UsageError(msg) from None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    __tracebackhide__ = True  # a fixture's error is shown without this wrapper
    url = yield
    if (
        fixturedef.argname == "harness_database_url"
        and isinstance(url, str)
        and _remote_allowed(request.config)
        and (host := _host_of(url))
    ):
        # An overridden harness_database_url fixture names the server after the guard was set up.
        request.config.stash[_DATABASE_HOST] = host
        if (guard := request.config.stash.get(_CURRENT_NETWORK_GUARD, None)) is not None:
            guard.admit(host)
    return url


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    with contextlib.ExitStack() as guards:
        if (network := _network_guard(item)) is not None:
            item.stash[_NETWORK_GUARD] = item.config.stash[_CURRENT_NETWORK_GUARD] = guards.enter_context(
                network
            )
        if (databases := _database_guard(item)) is not None:
            item.stash[_DATABASE_GUARD] = guards.enter_context(databases)
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    __tracebackhide__ = True
    before = running_clocks()
    with recording_clocks() as started:
        try:
            yield  # a failing test keeps its own error
        except Exception as error:
            explain_database_error(error)
            explain_clock_error(error, [*before, *started])
            _explain_other_loops(item, error)
            raise
        finally:
            running = running_clocks()
            item.stash[_CLOCKS_STARTED] = [clock for clock in started if clock in running]
            if (network := item.stash.get(_NETWORK_GUARD, None)) is not None:
                item.stash[_BLOCKED_SEEN] = len(network.blocked)
    __tracebackhide__ = False  # what the guards report below is this hook's own: show where it comes from
    if network is not None:
        network.assert_nothing_blocked()  # what the code under test swallowed
    if (databases := item.stash.get(_DATABASE_GUARD, None)) is not None:
        databases.assert_nothing_blocked()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    __tracebackhide__ = True
    # Stopped before the fixtures' teardown, which a failure must not skip, and where the clock
    # fixture would otherwise meet them still running inside its own clock.
    started: list[Clock] = item.stash.get(_CLOCKS_STARTED, [])
    left = stop_clocks(started)
    msg = (
        f"A clock started at {', '.join(clock.started_at or 'an unknown place' for clock in left)} was still "
        "running when the test ended; harness stopped it, so that the tests after this one run at the real time. "
        "Stop it in the test: `with harness.freeze_time(...)`, the clock fixture or @pytest.mark.clock do it for "
        "you, or call clock.stop()."
    )
    try:
        yield
    except BaseException as error:
        if left:
            error.add_note(f"harness: {msg}")
        raise
    if left:
        raise ClockError(msg)
    _assert_nothing_blocked_in_teardown(item)


def _assert_nothing_blocked_in_teardown(item: pytest.Item) -> None:
    """Connections refused while fixtures were torn down, which the call's check came too early for."""
    __tracebackhide__ = True
    network = item.stash.get(_NETWORK_GUARD, None)
    if network is None or len(network.blocked) <= (seen := item.stash.get(_BLOCKED_SEEN, 0)):
        return
    del network.blocked[:seen]  # reported with the call already
    try:
        network.assert_nothing_blocked()
    except NetworkBlockedError as error:
        error.add_note("harness: these were attempted while fixtures were torn down, after the test ran.")
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    error = call.excinfo.value if call.excinfo is not None else None
    if error is not None and report.failed and report.when in ("setup", "call"):
        _stop_when_the_server_is_gone(item, error)
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed  # a failed test's own error wins over mock checks
        item.stash[_CALL_ERROR] = error
    elif report.when == "teardown":
        if error is not None and item.config.stash.get(_SERVER_GONE, False) and _all_lost(error):
            report.outcome, report.longrepr = "passed", None  # the stop message says it once
        elif error is not None and error is item.stash.get(_CALL_ERROR, None):
            # A scope raises a violation again when it ends, for code that swallowed it; the test
            # already failed with that very error, so the teardown does not report it twice.
            report.outcome, report.longrepr = "passed", None
        item.stash[_CALL_ERROR] = None  # its traceback holds the test's frames
    return report


def _stop_when_the_server_is_gone(item: pytest.Item, error: BaseException) -> None:
    """After a test lost its connection, stop the run if the server does not answer a new one:
    every later test would wait on it and fail the same way."""
    database = item.config.stash.get(_DATABASE, None)
    if database is None or not lost_connection(error) or (reason := database.unreachable()) is None:
        return
    item.session.shouldstop = (
        f"harness: the database server stopped answering during {item.nodeid}, so the run stops here: every "
        f"later test would wait on it and fail the same way. {reason}"
    )
    item.config.stash[_SERVER_GONE] = True


def _all_lost(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):  # several fixtures' teardowns failed
        return all(_all_lost(each) for each in error.exceptions)
    return lost_connection(error)


@pytest.fixture(scope="session")
def harness_database_url(pytestconfig: pytest.Config) -> str | None:
    """The URL the test database is derived from; None means a SQLite file per worker."""
    return _database_url(pytestconfig)[0]


@pytest.fixture(scope="session")
def harness_schema() -> Schema:
    """What builds the test schema: override it to return your models' MetaData or a callable."""
    return None


@pytest.fixture(scope="session")
def harness_seed() -> SeedFunction | None:
    """Rows committed once, with the schema, that every test starts from: override it to return an
    async function that adds them through the session it gets and returns the objects tests reach
    by name (the `seeded` fixture)."""
    return None


@pytest.fixture(scope="session")
def harness_engine_options() -> dict[str, Any]:
    """Keyword arguments for create_test_engine(); override to change pool, echo or timeouts."""
    return {}


@pytest.fixture(scope="session")
def harness_database(
    pytestconfig: pytest.Config,
    harness_database_url: str | None,
    harness_schema: Schema,
    harness_seed: SeedFunction | None,
    harness_engine_options: dict[str, Any],
) -> Iterator[TestDatabase]:
    """The TestDatabase of this run (one per xdist worker), built once; its engine is db_engine."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    try:
        database = _run_database(
            pytestconfig,
            harness_database_url,
            schema=harness_schema,
            seed=harness_seed,
            worker=worker,
            recreate=bool(setting(pytestconfig, "harness_create_db")),
            engine_options=harness_engine_options,
        )
        database.create_sync()
        pytestconfig.stash[_DATABASE] = database
        failure = None
    except HarnessError as exc:
        failure = f"harness could not set up the test database: {exc}"
    if failure is not None:  # raised outside the except block: the reason alone, not its chain
        _stop_run(failure)
    yield database
    if pytestconfig.stash.get(_SERVER_GONE, False):
        return  # nothing to drop it on: `python -m harness.db URL --drop` clears what this run left
    # Under xdist other workers may still clone the template: the controller drops it at the end.
    database.drop_sync(template=worker is None)
    if worker is not None:  # the server and name the workers used, whatever the fixtures said
        base = database.template_name.removesuffix("_template")
        pytestconfig.workeroutput["harness_template"] = [harness_database_url, base]  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def harness_engines(pytestconfig: pytest.Config) -> list[AsyncEngine | str]:
    """The app's engines to adopt (AsyncEngines or module:attribute paths): the harness_engines ini key's."""
    return list(setting(pytestconfig, "harness_engines"))


@pytest.fixture(scope="session")
def _harness_adoption(
    harness_database: TestDatabase, harness_engines: list[AsyncEngine | str]
) -> Iterator[EngineAdoption]:
    assert harness_database.engine is not None
    try:  # a path that names no engine stops the run, as a database that cannot be built does
        adoption = adopt_engines(*harness_engines, test_engine=harness_database.engine)
        failure = None
    except HarnessError as exc:
        failure = f"harness could not adopt the app's engines (harness_engines): {exc}"
    if failure is not None:
        _stop_run(failure)
    with adoption:
        yield adoption


@pytest.fixture
def db_engine(harness_database: TestDatabase, _harness_adoption: EngineAdoption) -> AsyncEngine:
    """The AsyncEngine of the test database; its pooled connections live as long as their event loop."""
    engine = harness_database.engine
    assert engine is not None
    return engine


def marker_options(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    """The keyword arguments of the ``name`` markers on the test, the closest winning."""
    options: dict[str, Any] = {}
    for marker in request.node.iter_markers(name):
        options = marker.kwargs | options
    return options


@pytest_asyncio.fixture
async def db_session(request: pytest.FixtureRequest, db_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An AsyncSession in a rollback scope: whatever the test writes, even committed, is gone after it."""
    options = marker_options(request, "db_session")
    scope = (
        commit_scope if options.pop("real_commits", False) else rollback_scope
    )  # see the db_session marker
    async with scope(db_engine, **options) as session:
        yield session


@pytest_asyncio.fixture
async def seeded(harness_database: TestDatabase, db_session: AsyncSession) -> Seeded:
    """The seed's named objects (see `harness_seed`), loaded into this test's `db_session`: fresh in
    every test, so what one test changes never reaches the next."""
    if harness_database.seed is None:
        msg = (
            "The seeded fixture needs seed data: override the harness_seed fixture to return an async "
            "function that adds the rows (see harness.db.seed)."
        )
        raise SchemaError(msg)
    return await load_seeded(db_session)


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Iterator[Clock]:
    """Time frozen for the test: at the `clock` marker's time, else at the real time the test starts."""
    marker = request.node.get_closest_marker("clock")
    args, kwargs = (marker.args, dict(marker.kwargs)) if marker else ((), {})
    kwargs.setdefault("backend", setting(request.config, "harness_clock_backend") or None)
    try:
        frozen = freeze_time(*args, **kwargs)
    except TypeError as error:
        msg = f"Bad @pytest.mark.clock arguments: {error}. It takes freeze_time()'s: (when, *, tz, tz_offset, tick, backend)."
        raise ClockError(msg) from None
    with frozen:
        yield frozen


NO_APP: Any = object()  # harness_app's default: no app under test


def call_failed(item: pytest.Item) -> bool:
    """Whether the test's own call failed: its error then wins over checks at teardown."""
    return item.stash.get(_CALL_FAILED, False)


@pytest.fixture
def harness_app() -> Any:
    """The ASGI app under test, for `app_client`: override this fixture in conftest.py."""
    return NO_APP


@pytest.fixture
def harness_app_client_options() -> dict[str, Any]:
    """Keyword arguments of every test's `app_client` (as `harness.app_client()` takes them):
    override it for the app's `base_url` (an app under `/api`, one that checks the Host header) or
    default `headers`. The `app_client` marker's options win; its headers are added to these."""
    return {}


@pytest.fixture
def harness_app_bind() -> list[Any]:
    """More of the app to point at the test database, per test: engines to adopt, async_sessionmakers to bind."""
    return []


@pytest.fixture
def _harness_app_session(
    request: pytest.FixtureRequest, harness_app_bind: list[Any], harness_engines: list[Any]
) -> AsyncSession | None:
    # An app that uses no database needs none (and a sync fixture may set db_session up itself).
    session: AsyncSession | None = (
        request.getfixturevalue("db_session") if harness_app_bind or harness_engines else None
    )
    return session


def _lifespan_scope(fixture_name: str, config: pytest.Config) -> Any:
    return _fixture_loop_scope(config)


@pytest_asyncio.fixture(scope=_lifespan_scope)
async def _harness_lifespans() -> AsyncIterator[list[AppLifespan]]:
    # The shared lifespan of one event loop, for one app object at a time: an app made per test
    # (harness_app returning create_app()) shuts the previous one's down. Shut down when the loop ends.
    lifespans: list[AppLifespan] = []
    yield lifespans
    for lifespan in lifespans:
        await lifespan.shutdown()


@pytest_asyncio.fixture(name="app_client")
async def app_client_fixture(
    request: pytest.FixtureRequest,
    harness_app: Any,
    harness_app_client_options: dict[str, Any],
    harness_app_bind: list[Any],
    _harness_app_session: AsyncSession | None,
    _harness_lifespans: list[AppLifespan],
) -> AsyncIterator[AppClient]:
    """An httpx.AsyncClient over ASGI for `harness_app`, its lifespan run, on the test's database."""
    if harness_app is NO_APP:
        msg = (
            "app_client needs the app under test: define a `harness_app` fixture in conftest.py that "
            "returns it (e.g. `return create_app()`)."
        )
        raise pytest.UsageError(msg)
    marked = marker_options(request, "app_client")
    options = harness_app_client_options | marked
    if "headers" in harness_app_client_options and "headers" in marked:  # a marker adds headers
        headers = httpx.Headers(harness_app_client_options["headers"])
        headers.update(marked["headers"])  # names match whatever their case: the marker's win
        options["headers"] = headers
    mode = setting(request.config, "harness_app_lifespan")
    if "lifespan" not in options and mode == "off":
        options["lifespan"] = False
    elif "lifespan" not in options and mode == "shared" and _fixture_loop_scope(request.config) != "function":
        if not _harness_lifespans or _harness_lifespans[0].app is not harness_app:
            while _harness_lifespans:
                await _harness_lifespans.pop().shutdown()
            lifespan = AppLifespan(harness_app)
            await lifespan.startup(read_only=_harness_app_session)  # refuses a start-up that writes
            _harness_lifespans.append(lifespan)
        options["lifespan"] = _harness_lifespans[0]
    async with app_client(
        harness_app, session=_harness_app_session, bind=harness_app_bind, **options
    ) as client:
        yield client


def _stop_run(message: str) -> NoReturn:
    # pytest.exit in an xdist worker is an INTERNALERROR that hides the message.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail(message, pytrace=False)
    pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


def _run_database(config: pytest.Config, url: str | None, **options: Any) -> TestDatabase:
    """This run's TestDatabase for ``url``: its name, run id, reuse and remote settings."""
    options.setdefault("name", _database_name(config, url))
    return TestDatabase(
        url,
        run_id=config.stash[_RUN_ID],
        reuse=bool(setting(config, "harness_reuse_db")),
        allow_remote=_remote_allowed(config),
        **options,
    )


def _database_name(config: pytest.Config, url: str | None) -> str | None:
    return str(setting(config, "harness_database_name") or "") or _default_name(config, url)


def _remote_allowed(config: pytest.Config) -> bool:
    return bool(setting(config, "harness_allow_remote_database"))


def _default_name(config: pytest.Config, url: str | None) -> str | None:
    if url:
        return None  # the URL's database name
    # Projects whose folders share a name (app, backend) must not share the temporary SQLite file.
    folder = re.sub(r"[^a-z0-9_]", "_", config.rootpath.name.lower())[:30] or "harness"
    return f"{folder}_{hashlib.sha256(str(config.rootpath).encode()).hexdigest()[:8]}"


def _asyncio_ini(config: pytest.Config, name: str) -> object:
    """pytest-asyncio's ini value; None when pytest-asyncio is not loaded (`-p no:asyncio`)."""
    try:
        return config.getini(name)
    except ValueError:  # "unknown configuration value": nobody registered it
        return None


def _fixture_loop_scope(config: pytest.Config) -> str:
    scope = _asyncio_ini(config, "asyncio_default_fixture_loop_scope")
    return str(scope) if scope in _LOOP_SCOPES else "function"


def _test_loop_scope(item: pytest.Item) -> str:
    marker = item.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") if marker else None
    return str(scope or _asyncio_ini(item.config, "asyncio_default_test_loop_scope") or "function")


def register_factory(factory_class: F, fixture_name: str | None = None, /, **overrides: Any) -> F:
    """Expose a factory as pytest fixtures, in the spirit of pytest-factoryboy: call it in conftest.py.

    ``register_factory(ContactFactory)`` adds the fixtures ``contact_factory`` (the factory, with the
    test's ``db_session`` active so ``await contact_factory.create()`` works) and ``contact`` (one
    created object). ``fixture_name`` renames both, and ``overrides`` are passed to ``create()``, so
    ``register_factory(ContactFactory, "opted_out_contact", opted_out=True)`` makes a variant.
    Returns the factory, so it can decorate the class. The fixtures land in the module that calls
    it, so call it in a conftest.py, a test module or a ``pytest_plugins`` module: pytest does not
    look for fixtures in a ``factories.py`` that is merely imported.
    """
    model = getattr(getattr(factory_class, "_meta", None), "model", None)
    if not (isinstance(factory_class, type) and issubclass(factory_class, ModelFactory)) or model is None:  # type: ignore[redundant-expr]
        msg = f"register_factory() takes a harness.ModelFactory subclass with a Meta.model, got {factory_class!r}."
        raise TypeError(msg)
    name = fixture_name or re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()
    factory_name = f"{name}_factory"

    @pytest.fixture(name=factory_name)
    def factory_fixture(db_session: AsyncSession) -> F:
        return factory_class

    @pytest_asyncio.fixture(name=name)
    async def instance_fixture(db_session: AsyncSession, request: pytest.FixtureRequest) -> Any:
        made_by = request.getfixturevalue(factory_name)
        return await made_by.create(**overrides)

    # pytest finds fixtures among the attributes of the module that registers them.
    module = sys._getframe(1).f_globals
    module[f"_harness_fixture_{factory_name}"] = factory_fixture
    module[f"_harness_fixture_{name}"] = instance_fixture
    return factory_class


_api_fixture_names: dict[type[MockApi], str] = {}


def api_fixture_name(api_class: type[MockApi]) -> str:
    """The name `register_api` gave the fixture of ``api_class`` (its default when not registered)."""
    return _api_fixture_names.get(api_class) or api_class.fixture_name()


def register_api(api_class: A, fixture_name: str | None = None, /) -> A:
    """Expose a `MockApi` subclass as a pytest fixture: call it in conftest.py.

    ``register_api(SmsApi)`` adds the fixture ``sms_api``: the mock, active for the test, that
    fails the test at teardown on an unmatched request or a required route left uncalled.
    Returns the class, so it can decorate it.
    """
    candidate: object = api_class  # untyped callers pass anything
    if not (isinstance(candidate, type) and issubclass(candidate, MockApi)):
        msg = f"register_api() takes a harness.MockApi subclass, got {api_class!r}."
        raise TypeError(msg)
    name = fixture_name or api_class.fixture_name()
    _api_fixture_names[api_class] = name

    @pytest.fixture(name=name)
    def api_fixture(request: pytest.FixtureRequest) -> Iterator[MockApi]:
        __tracebackhide__ = True
        api = api_class().start()
        yield api
        api.stop(check=not call_failed(request.node))

    sys._getframe(1).f_globals[f"_harness_fixture_{name}"] = api_fixture
    return api_class
