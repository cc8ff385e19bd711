"""The polyfactory adapter: the test's session, flush without commit, keys left to the database."""

from __future__ import annotations

from typing import Any

import pytest
from polyfactory.factories.sqlalchemy_factory import SQLAASyncPersistence
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory as PlainSQLAlchemyFactory
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from harness import FactoryError, capture_queries, rollback_scope, use_session
from harness.polyfactory import SQLAlchemyFactory
from tests.conftest import count_rows
from tests.models import Account, Campaign, Contact, Owner


class ContactFactory(SQLAlchemyFactory[Contact]):
    __set_relationships__ = True


class CampaignFactory(SQLAlchemyFactory[Campaign]):
    __set_relationships__ = False


class AccountFactory(SQLAlchemyFactory[Account]):
    __set_relationships__ = True


async def test_create_flushes_through_the_test_session_and_never_commits(
    db_session: AsyncSession, db_engine: AsyncEngine
) -> None:
    commits: list[Any] = []
    event.listen(db_session.sync_session, "before_commit", commits.append)
    with capture_queries(db_engine) as log:
        contact = await ContactFactory.create_async()

    assert contact in db_session
    assert contact.id is not None
    assert contact.campaign is not None
    assert contact.campaign_id == contact.campaign.id
    assert await db_session.get(Contact, contact.id) is contact
    assert commits == []
    assert not any(q.sql.lstrip().upper().startswith(("COMMIT", "RELEASE")) for q in log.queries)


async def test_created_rows_are_rolled_back_with_the_scope(db_engine: AsyncEngine) -> None:
    async with rollback_scope(db_engine):
        await ContactFactory.create_batch_async(5)
    assert await count_rows(db_engine) == {"campaigns": 0, "contacts": 0}


@pytest.mark.parametrize("seed", range(20))
async def test_batches_leave_keys_to_the_database_and_never_collide(
    db_session: AsyncSession, seed: int
) -> None:
    """polyfactory alone draws random integer keys and short unique strings: batches of 150 collided."""
    ContactFactory.seed_random(seed)
    contacts = await ContactFactory.create_batch_async(150)

    ids = sorted(contact.id for contact in contacts)
    assert ids == list(range(ids[0], ids[0] + 150))  # numbered by the database, in one run
    assert len({contact.phone for contact in contacts}) == 150
    assert await db_session.scalar(select(func.count()).select_from(Campaign)) == 150


async def test_plain_polyfactory_draws_the_keys_this_adapter_leaves_out() -> None:
    """The baseline the adapter changes: without it, keys and foreign keys are random numbers."""

    class PlainContactFactory(PlainSQLAlchemyFactory[Contact]):
        __set_primary_key__ = True
        __set_foreign_keys__ = True
        __allow_none_optionals__ = False  # the nullable campaign_id: a number every time

    assert isinstance(PlainContactFactory.build().id, int)
    assert isinstance(PlainContactFactory.build().campaign_id, int)
    assert ContactFactory.build().id is None


async def test_unset_relationships_and_server_defaults_are_loaded(db_session: AsyncSession) -> None:
    """Read after the flush, they would raise MissingGreenlet; the adapter loads them first."""
    campaign = await CampaignFactory.create_async()
    account = await AccountFactory.create_async()

    assert campaign.contacts == []
    assert account.created_at is not None
    assert isinstance(account.owner, Owner)


async def test_foreign_keys_are_not_drawn_at_random(db_session: AsyncSession) -> None:
    """A random foreign key names a row that does not exist: without a parent it stays NULL."""

    class LoneContactFactory(SQLAlchemyFactory[Contact]):
        __set_relationships__ = False

    contact = await LoneContactFactory.create_async()
    assert contact.campaign_id is None
    assert contact.campaign is None


async def test_a_test_can_pass_the_parent(db_session: AsyncSession) -> None:
    campaign = await CampaignFactory.create_async()
    contacts = await ContactFactory.create_batch_async(3, campaign=campaign)

    assert {contact.campaign_id for contact in contacts} == {campaign.id}
    assert sorted(c.id for c in campaign.contacts) == sorted(c.id for c in contacts)


async def test_use_session_picks_the_session(db_engine: AsyncEngine) -> None:
    scope = rollback_scope(db_engine)
    async with scope as session:
        other = scope.new_session()
        with use_session(other):
            campaign = await CampaignFactory.create_async()
        assert campaign in other
        assert campaign not in session
        await other.close()


# -- Clear errors -----------------------------------------------------------------------------------


async def test_create_without_a_session_names_the_fix() -> None:
    with pytest.raises(FactoryError, match=r"no session to create Contact.*db_session fixture.*use_session"):
        await ContactFactory.create_async()


async def test_a_session_or_persistence_of_its_own_is_refused(db_session: AsyncSession) -> None:
    class OwnSessionFactory(SQLAlchemyFactory[Contact]):
        __async_session__ = db_session

    class OwnPersistenceFactory(SQLAlchemyFactory[Contact]):
        __async_persistence__ = SQLAASyncPersistence(db_session)

    with pytest.raises(
        FactoryError, match=r"OwnSessionFactory sets __async_session__.*never commits: remove it"
    ):
        await OwnSessionFactory.create_async()
    with pytest.raises(FactoryError, match=r"OwnPersistenceFactory sets __async_persistence__"):
        await OwnPersistenceFactory.create_async()


def test_sync_creation_is_refused_with_the_async_call() -> None:
    with pytest.raises(FactoryError, match=r"await ContactFactory.create_async\(\)"):
        ContactFactory.create_sync()
    with pytest.raises(FactoryError, match=r"await ContactFactory.create_batch_async\(4\)"):
        ContactFactory.create_batch_sync(4)
