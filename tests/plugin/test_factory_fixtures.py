"""register_factory fixtures and per-test seeding, run through pytester on the run's backend."""

from __future__ import annotations

import json
import re

import pytest

CONFTEST = """
    import factory
    import pytest
    from sqlalchemy import ForeignKey, String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

    from harness import ModelFactory, register_factory

    class Base(DeclarativeBase):
        pass

    class Team(Base):
        __tablename__ = "teams"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(60))
        members: Mapped[list["Member"]] = relationship(back_populates="team")

    class Member(Base):
        __tablename__ = "members"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(60))
        team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
        team: Mapped[Team] = relationship(back_populates="members")

    @register_factory
    class TeamFactory(ModelFactory[Team]):
        class Meta:
            model = Team
        name = factory.Faker("company")

    class MemberFactory(ModelFactory[Member]):
        class Meta:
            model = Member
        name = factory.Faker("name")
        team = factory.SubFactory(TeamFactory)

    register_factory(MemberFactory)
    register_factory(MemberFactory, "captain", name="The Captain")

    @pytest.fixture(scope="session")
    def harness_schema():
        return Base.metadata
"""


def test_registered_factories_become_fixtures(harness_pytester: pytest.Pytester) -> None:
    """contact_factory / contact style fixtures exist, create through db_session, and take overrides."""
    harness_pytester.makeconftest(CONFTEST)
    harness_pytester.makepyfile(
        """
        from sqlalchemy import func, select
        from conftest import Member

        async def test_instance_fixture(member, db_session):
            assert member.id is not None
            assert member.team.members == [member]
            assert await db_session.get(Member, member.id) is member

        async def test_factory_fixture(member_factory, team, db_session):
            await member_factory.create_batch(3, team=team)
            assert len(team.members) == 3
            assert await db_session.scalar(select(func.count()).select_from(Member)) == 3

        async def test_named_variant(captain):
            assert captain.name == "The Captain"

        async def test_rows_do_not_leak(db_session):
            assert await db_session.scalar(select(func.count()).select_from(Member)) == 0
        """
    )
    result = harness_pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:xdist")
    result.assert_outcomes(passed=4)


NAMES_TEST = """
    import json, os

    async def test_a(member_factory, db_session):
        members = await member_factory.create_batch(3)
        with open(os.environ["NAMES_FILE"], "a") as out:
            out.write(json.dumps([m.name for m in members]) + "\\n")

    def test_b():
        pass
"""


def _names(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[list[str], str]:
    names_file = pytester.path / "names.jsonl"
    names_file.unlink(missing_ok=True)
    monkeypatch.setenv("NAMES_FILE", str(names_file))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:xdist", *args)
    result.assert_outcomes(passed=2)
    header = next(line for line in result.outlines if line.startswith("harness: factory data seed"))
    return json.loads(names_file.read_text()), header


def test_a_seed_replays_the_same_data(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--harness-seed makes Faker data repeat run to run; the header shows the seed to replay with."""
    harness_pytester.makeconftest(CONFTEST)
    harness_pytester.makepyfile(NAMES_TEST)

    first, header = _names(harness_pytester, monkeypatch, "--harness-seed=1234")
    again, _ = _names(harness_pytester, monkeypatch, "--harness-seed=1234")
    other, _ = _names(harness_pytester, monkeypatch, "--harness-seed=99")
    default, default_header = _names(harness_pytester, monkeypatch)

    assert header == "harness: factory data seed 1234 (replay with --harness-seed=1234)"
    assert first == again
    assert other != first
    seed = re.search(r"--harness-seed=(\d+)", default_header)
    assert seed is not None
    assert _names(harness_pytester, monkeypatch, f"--harness-seed={seed.group(1)}")[0] == default


def test_a_tests_data_does_not_depend_on_the_tests_before_it(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test is reseeded from the run seed and its node id: running it alone gives the same data."""
    harness_pytester.makeconftest(CONFTEST)
    harness_pytester.makepyfile(
        NAMES_TEST.replace("def test_b", "def test_0_first").replace(
            "async def test_a", "async def test_z_last"
        )
    )
    names_file = harness_pytester.path / "names.jsonl"
    monkeypatch.setenv("NAMES_FILE", str(names_file))
    harness_pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:xdist", "--harness-seed=5"
    ).assert_outcomes(passed=2)
    harness_pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:xdist", "--harness-seed=5", "-k", "test_z_last"
    ).assert_outcomes(passed=1, deselected=1)
    together, alone = names_file.read_text().splitlines()
    assert together == alone


def test_data_replays_after_a_draw_from_factory_boys_random(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain factory-boy fuzzy value drawn before the first harness factory does not cancel the seed;
    a test that seeds factory-boy itself keeps its own seed."""
    harness_pytester.makeconftest(CONFTEST)
    harness_pytester.makepyfile(
        NAMES_TEST.replace(
            "async def test_a(member_factory, db_session):",
            "async def test_a(member_factory, db_session):\n"
            "        factory.fuzzy.FuzzyInteger(0, 10**9).fuzz()  # a plain factory-boy draw first",
        )
        .replace("import json, os", "import json, os\n    import factory.fuzzy, factory.random")
        .replace(
            "def test_b():\n        pass",
            "async def test_b(member_factory):\n"
            "        factory.random.reseed_random(42)\n"
            "        first = (await member_factory.create()).name\n"
            "        factory.random.reseed_random(42)\n"
            "        assert (await member_factory.create()).name == first",
        )
    )
    first, _ = _names(harness_pytester, monkeypatch, "--harness-seed=77")
    again, _ = _names(harness_pytester, monkeypatch, "--harness-seed=77")
    assert first == again


def test_an_unawaited_create_fails_the_test(harness_pytester: pytest.Pytester) -> None:
    """Under -W error::RuntimeWarning (and harness's own filterwarnings=error) a forgotten await fails."""
    harness_pytester.makeconftest(CONFTEST)
    harness_pytester.makepyfile(
        """
        async def test_forgot_await(member_factory):
            member_factory.create()
        """
    )
    result = harness_pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:xdist", "-W", "error::RuntimeWarning"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*MemberFactory.create() at *test_an_unawaited_create_fails_the_test.py:2 was never awaited*"]
    )


POLYFACTORY_TEST = """
    import json, os
    from conftest import Member
    from harness.polyfactory import SQLAlchemyFactory

    class MemberFactory(SQLAlchemyFactory[Member]):
        pass

    def test_a():
        with open(os.environ["NAMES_FILE"], "a") as out:
            out.write(json.dumps([member.name for member in MemberFactory.batch(3)]) + "\\n")

    def test_b():
        pass
"""


def test_polyfactory_data_replays_with_the_seed_too(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """polyfactory keeps its own Random and Faker: harness reseeds them per test as well."""
    harness_pytester.makeconftest(CONFTEST)
    harness_pytester.makepyfile(POLYFACTORY_TEST)

    first, _ = _names(harness_pytester, monkeypatch, "--harness-seed=1234")
    again, _ = _names(harness_pytester, monkeypatch, "--harness-seed=1234")
    other, _ = _names(harness_pytester, monkeypatch, "--harness-seed=99")

    assert first == again
    assert other != first
