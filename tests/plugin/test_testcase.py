"""The base test classes (harness.testcase), run through pytester on the run's backend."""

from __future__ import annotations

import os
import textwrap

import pytest

CONFTEST = """
    import pytest
    from fastapi import Depends, FastAPI
    from sqlalchemy import ForeignKey, func, select
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

    from harness import MockApi, ModelFactory, endpoint

    class Base(DeclarativeBase):
        pass

    class Team(Base):
        __tablename__ = "teams"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        members: Mapped[list["Member"]] = relationship(back_populates="team", cascade="all, delete-orphan")

    class Member(Base):
        __tablename__ = "members"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
        team: Mapped[Team] = relationship(back_populates="members")

    class TeamFactory(ModelFactory[Team]):
        class Meta:
            model = Team
        name = "Team"

    class ChatApi(MockApi):
        base_url = "https://chat.example"
        post = endpoint("POST", "/messages", status=201)

    SessionLocal = async_sessionmaker(expire_on_commit=False)
    app = FastAPI()

    async def get_db():
        async with SessionLocal() as session:
            yield session

    @app.post("/teams")
    async def create_team(name: str, db=Depends(get_db)):
        db.add(Team(name=name))
        await db.commit()
        return {"teams": await db.scalar(select(func.count()).select_from(Team))}

    @pytest.fixture(scope="session")
    def harness_schema():
        return Base.metadata

    @pytest.fixture
    def harness_app():
        return app

    @pytest.fixture
    def harness_app_bind():
        return [SessionLocal]

    async def count(session, model):
        return await session.scalar(select(func.count()).select_from(model))
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run the inner suite: in this process on SQLite (fast); in a subprocess on PostgreSQL, where
    asyncpg does not survive several inner runs in one process."""
    if os.environ.get("HARNESS_DATABASE_URL"):
        return pytester.runpytest_subprocess("-p", "no:randomly", *args)
    return pytester.runpytest("-p", "no:randomly", *args)


def use_loop(pytester: pytest.Pytester, scope: str, *, mode: str = "auto") -> None:
    """Rewrite the inner run's ini with this loop scope for fixtures and tests."""
    ini = (
        pytester.path.joinpath("tox.ini").read_text() if pytester.path.joinpath("tox.ini").exists() else None
    )
    text = (pytester.path / "pytest.ini").read_text() if ini is None else ini
    name = next(line for line in text.splitlines() if line.startswith("harness_database_name"))
    pytester.makeini(
        textwrap.dedent(
            f"""
            [pytest]
            asyncio_mode = {mode}
            asyncio_default_fixture_loop_scope = {scope}
            asyncio_default_test_loop_scope = {scope}
            filterwarnings = error
            {name}
            """
        )
    )


@pytest.fixture
def tester(harness_pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester with the models, app and mock above, and a session-wide event loop."""
    harness_pytester.makeconftest(CONFTEST)
    use_loop(harness_pytester, "session")
    return harness_pytester


def test_attributes_are_the_fixtures_of_the_test(tester: pytest.Pytester) -> None:
    """self.db is db_session, self.client the app client, fixtures still arrive as arguments."""
    tester.makepyfile(
        """
        from conftest import Team, count
        from harness import IntegrationTest

        class TestTeams(IntegrationTest):
            async def test_db_is_the_session_fixture(self, db_session, app_client):
                assert self.db is db_session
                assert self.client is app_client

            async def test_app_writes_land_in_the_test_scope(self):
                response = await self.client.post("/teams", params={"name": "a"})
                assert response.json() == {"teams": 1}
                assert await count(self.db, Team) == 1

            async def test_and_are_gone_for_the_next(self):
                assert await count(self.db, Team) == 0

            def test_sync_methods_stay_plain(self):
                assert self.db is not None
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=4)


def test_async_methods_need_no_marker_in_strict_mode(tester: pytest.Pytester) -> None:
    """In asyncio strict mode, async test methods of a base class still run (and pass)."""
    use_loop(tester, "session", mode="strict")
    tester.makepyfile(
        """
        from conftest import Team, count
        from harness import IntegrationTest

        class Checks:  # a mixin of tests, not a harness class
            async def test_from_the_mixin(self):
                assert await count(self.db, Team) == 0

        class TestStrict(Checks, IntegrationTest):
            async def test_runs(self):
                assert await count(self.db, Team) == 0
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("loop_scope", ["class", "session"])
def test_class_data_is_shared_and_each_test_gets_fresh_instances(
    tester: pytest.Pytester, loop_scope: str
) -> None:
    """setup_class_data runs once; each test sees fresh copies, and its changes are gone for the next."""
    use_loop(tester, loop_scope)
    tester.makepyfile(
        """
        from conftest import Member, Team, TeamFactory, count
        from harness import IntegrationTest

        runs = []

        class TestShared(IntegrationTest):
            @classmethod
            async def setup_class_data(cls, session):
                runs.append(1)
                cls.team = await TeamFactory.create(name="core")
                cls.members = [Member(name=n, team=cls.team) for n in ("ann", "bob")]
                session.add_all(cls.members)
                cls.size = 2

            async def test_changes_its_copy(self):
                assert self.team is not type(self).team  # a fresh instance, in the test's session
                assert self.team in self.db
                assert [m.name for m in self.team.members] == ["ann", "bob"]
                assert self.members[0] is self.team.members[0]  # one identity map
                self.team.name = "renamed"
                self.db.add(Member(name="cy", team=self.team))
                await self.db.commit()
                assert await count(self.db, Member) == 3

            async def test_sees_the_data_as_it_was(self):
                assert self.team.name == "core"
                assert await count(self.db, Member) == 2
                assert await self.db.get(Team, self.team.id) is self.team
                assert self.size == 2 and runs == [1]

        class TestAfterwards(IntegrationTest):
            async def test_the_class_data_is_gone(self):
                assert await count(self.db, Team) == 0
                assert not hasattr(TestShared, "team")
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=3)


def test_a_failing_class_data_hook_rolls_back_cleanly(tester: pytest.Pytester) -> None:
    """The hook's error fails each test of its class; its rows are gone and the next class runs."""
    tester.makepyfile(
        """
        from conftest import Team, count
        from harness import IntegrationTest

        class TestBroken(IntegrationTest):
            @classmethod
            async def setup_class_data(cls, session):
                cls.team = Team(name="half made")
                session.add(cls.team)
                await session.flush()
                raise RuntimeError("the hook broke")

            async def test_one(self):
                pass

            async def test_two(self):
                pass

        class TestNext(IntegrationTest):
            async def test_starts_clean(self, db_engine):
                assert await count(self.db, Team) == 0
                assert not hasattr(TestBroken, "team")
                # this test's connection only (SQLAlchemy < 2.0.38 keeps no count for SQLite files)
                assert getattr(db_engine.sync_engine.pool, "checkedout", lambda: 1)() == 1
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*RuntimeError: the hook broke*"])


def test_a_class_data_hook_that_is_not_async_is_refused(tester: pytest.Pytester) -> None:
    """A plain def hook is a TypeError naming the class, at import."""
    tester.makepyfile(
        """
        from harness import IntegrationTest

        class TestSync(IntegrationTest):
            @classmethod
            def setup_class_data(cls, session):
                pass

            async def test_one(self):
                pass
        """
    )
    result = run(tester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*TypeError: TestSync.setup_class_data must be an async classmethod: "
            "`@classmethod` then `async def setup_class_data(cls, session): ...`."
        ]
    )


def test_class_data_in_per_test_event_loops_is_a_start_up_error(tester: pytest.Pytester) -> None:
    """With function-scoped loops a class connection cannot live; the error says what to set."""
    use_loop(tester, "function")
    tester.makepyfile(
        """
        from harness import IntegrationTest

        class TestShared(IntegrationTest):
            @classmethod
            async def setup_class_data(cls, session):
                pass

            async def test_one(self):
                pass
        """
    )
    result = run(tester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: TestShared defines setup_class_data (*), whose data lives on one database connection across "
            "the class's tests, but its tests run in a 'function'-scoped event loop and fixtures in a 'function'-scoped one, *",
            'Run them in a loop that outlives a test: set asyncio_default_fixture_loop_scope = "session" and '
            'asyncio_default_test_loop_scope = "session" in your pytest configuration ("class" works too).',
        ]
    )


def test_a_base_class_without_the_plugin_says_how_to_load_it(tester: pytest.Pytester) -> None:
    """With the plugin disabled, each test errors with how to load it, not 'fixture not found'."""
    tester.makeconftest("")
    tester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    tester.makepyfile(
        """
        from harness import IntegrationTest

        class TestWithout(IntegrationTest):
            async def test_one(self):
                pass
        """
    )
    result = run(tester, "-p", "no:harness")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*TestWithout is a harness base class, but the harness pytest plugin is not loaded*-p no:harness*"]
    )


def test_clock_mocks_and_budgets_are_attributes(tester: pytest.Pytester) -> None:
    """self.clock under the clock marker, self.api() for mock_apis, self.assert_max_queries on self.db."""
    tester.makepyfile(
        """
        import datetime as dt
        import httpx
        import pytest
        from conftest import ChatApi, Team, count
        from harness import IntegrationTest

        @pytest.mark.clock("2024-01-15 10:00")
        class TestEverything(IntegrationTest):
            mock_apis = (ChatApi,)

            async def test_all_of_it(self):
                assert dt.datetime.now() == dt.datetime(2024, 1, 15, 10)
                await self.clock.advance(seconds=30)
                assert dt.datetime.now() == dt.datetime(2024, 1, 15, 10, 0, 30)
                async with httpx.AsyncClient() as http:
                    await http.post("https://chat.example/messages", json={"text": "hi"})
                self.api(ChatApi).post.assert_called_once_with(json={"text": "hi"})
                with self.assert_max_queries(1):
                    assert await count(self.db, Team) == 0

            async def test_an_uncalled_route_fails_at_teardown(self):
                self.api(ChatApi).post.respond(201).once()

            def test_an_unlisted_api_is_named(self):
                class Other(ChatApi):
                    pass
                with pytest.raises(LookupError, match=r"Other is not among TestEverything.mock_apis \\(ChatApi\\): add it"):
                    self.api(Other)

        class TestNoClock(IntegrationTest):
            def test_clock_without_marker(self):
                with pytest.raises(pytest.UsageError, match=r"mark the class or the test with @pytest.mark.clock"):
                    self.clock
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=4, errors=1)  # the uncalled route: passed, then an error at teardown
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of TestEverything.test_an_uncalled_route_fails_at_teardown*"]
    )
    result.stdout.fnmatch_lines(
        ["*RouteNotCalledError: These routes of ChatApi were expected but not called as declared:*"]
    )


def test_mock_apis_share_the_registered_fixture(tester: pytest.Pytester) -> None:
    """A class listed in mock_apis and registered as a fixture is one mock, not two."""
    tester.makepyfile(
        """
        import httpx
        from conftest import ChatApi
        from harness import IntegrationTest, register_api

        register_api(ChatApi, "chat")

        class TestShared(IntegrationTest):
            mock_apis = (ChatApi,)

            async def test_one_mock(self, chat):
                assert self.api(ChatApi) is chat
                async with httpx.AsyncClient() as http:
                    await http.post("https://chat.example/messages")
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=1)


def test_client_without_an_app_says_how_to_give_one(harness_pytester: pytest.Pytester) -> None:
    """Without a harness_app fixture the base class still runs; self.client names the fix."""
    harness_pytester.makepyfile(
        """
        import pytest
        from harness import IntegrationTest

        class TestNoApp(IntegrationTest):
            def test_client(self):
                with pytest.raises(pytest.UsageError, match="define a `harness_app` fixture in conftest.py"):
                    self.client
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(passed=1)


def test_real_commits_are_seen_by_other_connections_and_cleaned_after(tester: pytest.Pytester) -> None:
    """RealCommitsTest: gather over separate sessions works; rows go after each test and the class."""
    tester.makepyfile(
        """
        import asyncio
        from conftest import SessionLocal, Member, Team, count
        from harness import IntegrationTest, RealCommitsTest

        class TestWorkers(RealCommitsTest):
            @classmethod
            async def setup_class_data(cls, session):
                cls.team = Team(name="core")
                session.add(cls.team)

            async def test_parallel_sessions_commit(self, db_engine):
                async def worker(name):
                    async with SessionLocal() as own:
                        own.add(Member(name=name, team_id=self.team.id))
                        await asyncio.sleep(0)
                        await own.commit()

                await asyncio.gather(*(worker(n) for n in "abc"))
                async with db_engine.connect() as other:
                    members = (await other.exec_driver_sql("SELECT count(*) FROM members")).scalar()
                assert members == 3

            async def test_the_class_data_stays_and_test_rows_went(self):
                assert await count(self.db, Team) == 1
                assert await count(self.db, Member) == 0

            async def test_through_the_app(self):
                assert await count(self.db, Team) == 1  # a read of the test's session locks nothing
                assert (await self.client.post("/teams", params={"name": "b"})).json() == {"teams": 2}
                assert await count(self.db, Team) == 2  # and the next read sees the app's commit

        class TestAfterwards(IntegrationTest):
            async def test_everything_went(self):
                assert await count(self.db, Team) == 0
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=4)


def test_a_real_commit_test_that_fails_halfway_leaves_rows_and_ids_as_before(tester: pytest.Pytester) -> None:
    """After a failure between commits, the next test sees no rows of it and draws the same ids."""
    tester.makepyfile(
        """
        import asyncio
        from conftest import SessionLocal, Team, count
        from harness import RealCommitsTest

        class TestHalfway(RealCommitsTest):
            async def test_fails_between_commits(self):
                async def add(name):
                    async with SessionLocal() as own:
                        own.add(Team(name=name))
                        await own.commit()

                await asyncio.gather(*(add(name) for name in "abc"))
                raise RuntimeError("halfway")

            async def test_sees_nothing_of_it(self):
                assert await count(self.db, Team) == 0
                team = Team(name="first")
                self.db.add(team)
                await self.db.commit()
                assert team.id == 1
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: halfway*"])


def test_real_commits_that_delete_earlier_rows_fail_the_test(tester: pytest.Pytester) -> None:
    """Deleting class data for real cannot be undone: the test errors at teardown, naming the table."""
    tester.makepyfile(
        """
        from sqlalchemy import text
        from conftest import Team
        from harness import RealCommitsTest

        class TestDeletes(RealCommitsTest):
            @classmethod
            async def setup_class_data(cls, session):
                session.add(Team(name="core"))

            async def test_deletes_it(self):
                await self.db.execute(text("DELETE FROM teams"))
                await self.db.commit()
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*IsolationError: Rows that existed before the commit scope were deleted for real: 1 of teams*"]
    )


def test_class_data_in_containers_is_fresh_and_other_values_are_shared(tester: pytest.Pytester) -> None:
    """Mapped objects in sets, named tuples, defaultdicts and dataclasses are copied; the rest is kept."""
    tester.makepyfile(
        """
        import dataclasses
        from collections import defaultdict, namedtuple
        from sqlalchemy import select
        from conftest import Team, count
        from harness import IntegrationTest

        Pair = namedtuple("Pair", "left right")

        @dataclasses.dataclass
        class Roster:
            team: Team
            size: int

        class TestValues(IntegrationTest):
            team = None  # declared in the class body, set by the hook

            @classmethod
            async def setup_class_data(cls, session):
                cls.team = Team(name="core")
                session.add(cls.team)
                await session.flush()
                cls.teams = {cls.team}
                cls.pair = Pair(cls.team, 2)
                cls.by_name = defaultdict(list, {"core": [cls.team]})
                cls.roster = Roster(cls.team, 1)
                cls.query = select(Team).where(Team.name == "core")
                cls.template = Team(name="never stored")

            async def test_changes_every_copy(self):
                assert next(iter(self.teams)) is self.team is self.pair.left is self.roster.team
                assert self.by_name["core"][0] is self.team and self.by_name["missing"] == []
                assert (await self.db.scalars(self.query)).one() is self.team
                assert self.template.name == "never stored"
                self.team.name = "changed"

            async def test_sees_none_of_it(self):
                assert self.team.name == "core"
                assert next(iter(self.teams)).name == "core"

        def test_the_class_body_value_is_back():
            assert TestValues.team is None and not hasattr(TestValues, "teams")
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=3)


def test_every_mock_is_stopped_and_reported_when_several_fail(tester: pytest.Pytester) -> None:
    """Two mocks with unmatched requests: both are reported, and neither leaks into the next test."""
    tester.makepyfile(
        """
        import httpx
        from harness import IntegrationTest, MockApi, endpoint

        class AApi(MockApi):
            base_url = "https://a.example"
            ping = endpoint("POST", "/ping")

        class BApi(MockApi):
            base_url = "https://b.example"
            ping = endpoint("POST", "/ping")

        class TestMocks(IntegrationTest):
            mock_apis = (AApi, BApi)

            async def test_both_unmatched(self):
                async with httpx.AsyncClient() as http:
                    for host in "ab":
                        try:
                            await http.get(f"https://{host}.example/nothing")
                        except Exception:
                            pass

            async def test_next_starts_clean(self):
                async with httpx.AsyncClient() as http:
                    assert (await http.post("https://a.example/ping")).status_code == 200
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*2 mocks failed their checks*"])
    result.stdout.fnmatch_lines(["*UnmatchedRequestError: BApi: 1 request(s)*"])
    result.stdout.fnmatch_lines(["*UnmatchedRequestError: AApi: 1 request(s)*"])


def test_mocks_are_active_in_the_app_lifespan_and_class_data_is_made_unfrozen(
    harness_pytester: pytest.Pytester,
) -> None:
    """The app's start-up may call a mocked API; class data is made before any test's clock."""
    use_loop(harness_pytester, "session")
    harness_pytester.makeconftest(
        """
        import contextlib
        import datetime as dt
        import httpx
        import pytest
        from fastapi import FastAPI
        from harness import MockApi, endpoint

        class ConfApi(MockApi):
            base_url = "https://conf.example"
            config = endpoint("GET", "/config", json={"mode": "test"})

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with httpx.AsyncClient() as http:
                app.state.mode = (await http.get("https://conf.example/config")).json()["mode"]
            yield

        app = FastAPI(lifespan=lifespan)

        @app.get("/mode")
        async def mode():
            return {"mode": app.state.mode}

        @pytest.fixture
        def harness_app():
            return app
        """
    )
    harness_pytester.makepyfile(
        """
        import datetime as dt
        import pytest
        from conftest import ConfApi
        from harness import IntegrationTest

        class TestStartUp(IntegrationTest):
            mock_apis = (ConfApi,)

            @classmethod
            async def setup_class_data(cls, session):
                cls.made_at = dt.datetime.now()

            @pytest.mark.clock("2024-01-15 10:00")
            async def test_first_is_frozen(self):
                assert (await self.client.get("/mode")).json() == {"mode": "test"}
                assert self.made_at.year > 2024

            async def test_second(self):
                assert self.made_at.year > 2024
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(passed=2)


def test_setup_errors_are_shown_under_xdist(tester: pytest.Pytester) -> None:
    """A start-up refusal in an xdist worker fails the tests with the message, not an INTERNALERROR."""
    use_loop(tester, "function")
    tester.makepyfile(
        """
        from harness import IntegrationTest

        class TestShared(IntegrationTest):
            @classmethod
            async def setup_class_data(cls, session):
                pass

            async def test_one(self):
                pass
        """
    )
    result = run(tester, "-n", "2", "-p", "xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "TestShared defines setup_class_data (*), whose data lives on one database connection across*",
            "Run them in a loop that outlives a test: set asyncio_default_fixture_loop_scope = *",
        ]
    )


def test_shared_objects_changed_outside_a_test_are_named(tester: pytest.Pytester) -> None:
    """Changing the class's own object (not the test's copy) makes the next copy fail, naming the attribute."""
    tester.makepyfile(
        """
        from conftest import Team
        from harness import IntegrationTest

        class TestMisuse(IntegrationTest):
            @classmethod
            async def setup_class_data(cls, session):
                cls.team = Team(name="core")
                session.add(cls.team)

            async def test_changes_the_class_object(self):
                type(self).team.name = "changed behind harness's back"

            async def test_next(self):
                pass
        """
    )
    result = run(tester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ScopeError: setup_class_data's cls.team (Team) cannot be handed to the test as a fresh instance: *"
        ]
    )


def test_a_mock_class_imported_twice_is_named_with_the_fix(harness_pytester: pytest.Pytester) -> None:
    """A MockApi defined in conftest.py and imported from a test module is two classes: the error
    says so, instead of a bare isinstance assertion."""
    suite = harness_pytester.mkpydir("suite")
    (suite / "conftest.py").write_text(
        textwrap.dedent(
            """
            from harness import MockApi, endpoint, register_api

            class PriceApi(MockApi):
                base_url = "https://prices.example"
                quote = endpoint("GET", "/quote", json={"price": 1})

            register_api(PriceApi)
            """
        )
    )
    (suite / "test_prices.py").write_text(
        textwrap.dedent(
            """
            import os, sys

            sys.path.insert(0, os.path.dirname(__file__))  # as `pythonpath = tests` would
            from conftest import PriceApi  # a second copy: pytest imported it as suite.conftest
            from harness import IntegrationTest

            class TestPrices(IntegrationTest):
                mock_apis = (PriceApi,)

                async def test_quote(self):
                    pass
            """
        )
    )
    result = run(harness_pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*MockApiError: PriceApi exists twice: the `price_api` fixture mocks suite.conftest.PriceApi "
            "(*suite/conftest.py), and the test names conftest.PriceApi (*suite/conftest.py). A MockApi "
            "defined in conftest.py and imported from a test module is imported twice*tests/mocks.py*"
        ]
    )


def test_a_fixture_of_the_mocks_name_that_is_no_mock_is_named(harness_pytester: pytest.Pytester) -> None:
    """A fixture of the name register_api would give, returning something else: said, not crashed on."""
    harness_pytester.makeconftest(
        """
        import pytest
        from harness import MockApi

        class PriceApi(MockApi):
            base_url = "https://prices.example"

        @pytest.fixture
        def price_api():
            return {"price": 1}
        """
    )
    harness_pytester.makepyfile(
        """
        from conftest import PriceApi
        from harness import IntegrationTest

        class TestPrices(IntegrationTest):
            mock_apis = (PriceApi,)

            async def test_quote(self):
                pass
        """
    )
    result = run(harness_pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*MockApiError: The `price_api` fixture gave a builtins.dict (?), where mock_apis expects a "
            "conftest.PriceApi (*conftest.py): make `price_api` with register_api(PriceApi), or give your own "
            "fixture another name."
        ]
    )
