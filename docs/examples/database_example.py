"""Database isolation: rollback scopes, nested scopes, the app's sessions bound to a test, query budgets."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app import Base, Campaign, Contact, SessionLocal, list_campaigns

# --8<-- [start:rollback_scope]
from harness import create_test_engine, rollback_scope

engine = create_test_engine()  # in-memory SQLite


async def test_a_commit_inside_a_scope_is_rolled_back():
    """The scope's commit is a savepoint release; the scope's end rolls everything back."""
    async with rollback_scope(engine) as session:
        session.add(Campaign(name="January"))
        await session.commit()  # a savepoint release
    # everything is rolled back, the connection is back in the pool
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(Campaign)) == 0


# --8<-- [end:rollback_scope]


@pytest.fixture(scope="module", autouse=True)
async def _schema():
    """The in-memory database of `engine` gets the example app's tables."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


# --8<-- [start:nesting]
async def test_a_nested_scope_sees_the_outer_data():
    """An inner scope sees the outer scope's rows through fresh instances, and its own rows vanish."""
    async with rollback_scope(engine) as class_session:
        shared = Campaign(name="shared")
        class_session.add(shared)
        await class_session.flush()
        async with rollback_scope(class_session) as session:  # one per test
            campaign = await session.get(Campaign, shared.id)
            assert campaign is not shared  # a fresh instance of the shared row
            session.add(Contact(phone="+15550000001", campaign=campaign))
            await session.commit()
        # the inner scope's contact is gone; the shared campaign is still there
        assert await class_session.scalar(select(func.count()).select_from(Contact)) == 0
        assert await class_session.get(Campaign, shared.id) is shared


# --8<-- [end:nesting]


# --8<-- [start:adopt_engines]
from sqlalchemy import insert

import app as application
from harness import adopt_engines


async def test_the_app_writes_into_the_test_transaction(db_engine, db_session):
    """The app's engine, adopted, works on the test database inside the test's transaction."""
    with adopt_engines("app:engine", test_engine=db_engine):  # the plugin does this for harness_engines
        async with SessionLocal() as session:  # a session the app opens from its own sessionmaker
            session.add(Campaign(name="January"))
            await session.commit()  # a savepoint of the test's transaction
        async with application.engine.begin() as connection:  # the engine used directly
            await connection.execute(insert(Campaign).values(name="February"))
    assert (await db_session.scalars(select(Campaign.name).order_by(Campaign.id))).all() == [
        "January",
        "February",
    ]


# --8<-- [end:adopt_engines]


# --8<-- [start:bind_sessions]
from sqlalchemy.ext.asyncio import async_sessionmaker

from harness import bind_sessions

Reporting = async_sessionmaker(expire_on_commit=False)  # an app's sessionmaker bound at start-up


async def test_a_sessionmaker_without_an_engine(db_session):
    """bind_sessions points one sessionmaker at the test database, as adopting its engine would."""
    with bind_sessions(db_session, Reporting):
        async with Reporting() as session:
            session.add(Campaign(name="March"))
            await session.commit()
    assert await db_session.scalar(select(Campaign.name)) == "March"
    assert Reporting.kw.get("bind") is None  # restored on exit


# --8<-- [end:bind_sessions]


# --8<-- [start:queries]
from harness import assert_max_queries, assert_no_n_plus_one


async def add_campaigns(session, size):
    session.add_all(
        Campaign(name=f"campaign {n}", contacts=[Contact(phone=f"+1{size:03d}555{n:04d}")])
        for n in range(size)
    )
    await session.flush()


async def test_listing_campaigns_takes_two_queries(db_session):
    """list_campaigns loads the contacts of every campaign in one more query, not one per campaign."""
    await add_campaigns(db_session, 3)
    with assert_max_queries(db_session, 2):
        await list_campaigns(db_session)

    await assert_no_n_plus_one(db_session, setup=add_campaigns, run=list_campaigns, sizes=(2, 8))


# --8<-- [end:queries]
