"""Async factories: every factory-boy declaration, batches in one INSERT, the test's session, clear errors."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import factory
import factory.random
import pytest
from sqlalchemy import ForeignKey, String, event, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from harness import (
    FactoryError,
    ModelFactory,
    bind_sessions,
    capture_queries,
    rollback_scope,
    use_session,
)
from harness.db import current_session
from tests.conftest import count_rows
from tests.factories import AccountFactory, CampaignFactory, ContactFactory, OwnerFactory, PetFactory
from tests.models import Account, Campaign, Contact, Message, Owner, Plan, Sms


def inserts(log: Any) -> list[str]:
    return [q.sql for q in log.queries if q.sql.lstrip().upper().startswith("INSERT")]


# -- Creating through the test's session ----------------------------------------------------------


async def test_create_flushes_through_the_test_session_and_sets_ids(db_session: AsyncSession) -> None:
    contact = await ContactFactory.create()

    assert contact.id is not None
    assert contact.campaign.id is not None
    assert contact in db_session
    assert await db_session.get(Contact, contact.id) is contact
    assert (await db_session.scalar(select(func.count()).select_from(Contact))) == 1


async def test_create_never_commits(db_session: AsyncSession, db_engine: AsyncEngine) -> None:
    with capture_queries(db_engine) as log:
        await ContactFactory.create_batch(3)

    sent = " ".join(q.sql.upper() for q in log.queries)
    assert "COMMIT" not in sent
    assert "RELEASE" not in sent
    assert db_session.in_transaction()


async def test_create_batch_sends_one_insert_per_table(
    db_session: AsyncSession, db_engine: AsyncEngine
) -> None:
    campaign = await CampaignFactory.create()

    with capture_queries(db_engine) as log:
        contacts = await ContactFactory.create_batch(200, campaign=campaign)

    assert len(inserts(log)) == 1
    assert len({c.id for c in contacts}) == 200
    for contact in contacts[:5]:  # the same objects are in the session's identity map
        assert await db_session.get(Contact, contact.id) is contact


async def test_a_single_create_sends_only_its_inserts(
    db_session: AsyncSession, db_engine: AsyncEngine
) -> None:
    """create() in a loop costs one INSERT per row: no key lookups first (SQLite) or reads after."""
    await ContactFactory.create()
    with capture_queries(db_engine) as log:
        await ContactFactory.create()
    assert [q.sql.split()[:3] for q in log.queries] == [
        ["INSERT", "INTO", "campaigns"],
        ["INSERT", "INTO", "contacts"],
    ]


async def test_create_batch_with_sub_factories_inserts_parents_then_children(db_engine: AsyncEngine) -> None:
    async with rollback_scope(db_engine):
        with capture_queries(db_engine) as log:
            contacts = await ContactFactory.create_batch(50)

    assert len(inserts(log)) == 2  # campaigns, then contacts
    assert len({c.campaign.id for c in contacts}) == 50


async def test_factory_rows_are_rolled_back_with_the_scope(db_engine: AsyncEngine) -> None:
    async with rollback_scope(db_engine):
        await ContactFactory.create_batch(20)
    assert await count_rows(db_engine) == {"campaigns": 0, "contacts": 0}


async def test_build_touches_no_database(db_session: AsyncSession, db_engine: AsyncEngine) -> None:
    with capture_queries(db_engine) as log:
        contact = ContactFactory.build()
        batch = ContactFactory.build_batch(3)

    assert log.queries == []
    assert contact.id is None
    assert contact.campaign.name.startswith("campaign ")
    assert contact not in db_session
    assert len(batch) == 3


class LooseContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+1666{n:07d}")


async def test_relationships_are_loaded_after_create(db_session: AsyncSession) -> None:
    campaign = await CampaignFactory.create()
    await ContactFactory.create_batch(3, campaign=campaign)
    by_id = await LooseContactFactory.create(campaign_id=campaign.id)

    assert len(campaign.contacts) == 3  # no lazy load: MissingGreenlet would be raised here
    assert by_id.campaign is campaign  # loaded from the foreign key after the flush
    assert (await CampaignFactory.create()).contacts == []


async def test_server_defaults_are_loaded_after_create(db_session: AsyncSession) -> None:
    accounts = await AccountFactory.create_batch(3)

    assert all(isinstance(account.created_at, datetime) for account in accounts)


async def test_objects_stay_usable_after_the_code_under_test_commits(
    db_session: AsyncSession, db_engine: AsyncEngine
) -> None:
    contact = await ContactFactory.create()
    await db_session.commit()
    assert contact.phone.startswith("+1555")

    app_sessions = async_sessionmaker(db_engine)
    with bind_sessions(db_session, app_sessions):
        async with app_sessions() as app_session:
            row = await app_session.get(Contact, contact.id)
            assert row is not None
            row.phone = "+19999"
            await app_session.commit()
    assert contact.campaign.name.startswith("campaign ")
    await db_session.refresh(contact)
    assert contact.phone == "+19999"


async def test_nested_scope_factories_use_the_inner_session(db_engine: AsyncEngine) -> None:
    async with rollback_scope(db_engine) as class_session:
        shared = await CampaignFactory.create()
        async with rollback_scope(class_session) as test_session:
            assert current_session() is test_session
            contact = await ContactFactory.create(campaign=await test_session.get(Campaign, shared.id))
            assert contact in test_session
        assert current_session() is class_session
        assert await class_session.scalar(select(func.count()).select_from(Contact)) == 0
        assert await class_session.get(Campaign, shared.id) is shared
    assert current_session() is None


async def test_use_session_points_factories_at_a_session(db_engine: AsyncEngine) -> None:
    async with rollback_scope(db_engine) as session:
        other = async_sessionmaker(bind=session.bind)()
        with use_session(other):
            campaign = await CampaignFactory.create()
        assert campaign in other
        assert campaign not in session
        await other.close()


async def test_creates_gathered_on_one_session_run_one_after_another(db_session: AsyncSession) -> None:
    made = await asyncio.gather(*(ContactFactory.create_batch(10) for _ in range(5)))

    assert sum(len(batch) for batch in made) == 50
    assert await db_session.scalar(select(func.count()).select_from(Contact)) == 50


# -- Every factory-boy declaration ---------------------------------------------------------------


class TaggedCampaignFactory(ModelFactory[Campaign]):
    class Meta:
        model = Campaign

    class Params:
        big = factory.Trait(daily_limit=1000)
        base_limit = factory.Iterator([10, 20, 30])

    name = factory.Sequence(lambda n: f"tagged {n}")
    daily_limit = factory.SelfAttribute("base_limit")
    contacts = factory.RelatedFactoryList(
        "tests.factories.ContactFactory", factory_related_name="campaign", size=3
    )
    owner_contact = factory.RelatedFactory(
        "tests.factories.ContactFactory",
        factory_related_name="campaign",
        phone=factory.Sequence(lambda n: f"+1000{n:06d}"),
    )


class DeclaredContactFactory(ModelFactory[Contact]):
    class Meta:
        model = Contact

    class Params:
        unassigned = False

    phone = factory.LazyFunction(lambda: f"+1{uuid.uuid4().int % 10**12:012d}")
    campaign = factory.Maybe(
        "unassigned", yes_declaration=None, no_declaration=factory.SubFactory(CampaignFactory)
    )

    @factory.post_generation
    def renamed(self, create: bool, extracted: str | None, **_: Any) -> None:
        if extracted:
            self.phone = extracted

    @factory.post_generation
    async def siblings(self, create: bool, extracted: int | None, **_: Any) -> None:
        assert self.id is not None  # async hooks run after the flush
        if extracted:
            await ContactFactory.create_batch(extracted, campaign=self.campaign)


async def test_sequence_lazy_attribute_iterator_trait_params(db_session: AsyncSession) -> None:
    campaigns = await TaggedCampaignFactory.create_batch(3)
    big = await TaggedCampaignFactory.create(big=True)

    assert [c.daily_limit for c in campaigns] == [10, 20, 30]
    assert big.daily_limit == 1000
    assert len({c.name for c in campaigns}) == 3


async def test_related_factory_and_list_are_created_and_loaded(db_session: AsyncSession) -> None:
    campaign = await TaggedCampaignFactory.create()

    phones = sorted(c.phone for c in campaign.contacts)
    assert len(phones) == 4
    assert sum(phone.startswith("+1000") for phone in phones) == 1
    stored = await db_session.scalars(select(Contact.phone).where(Contact.campaign_id == campaign.id))
    assert sorted(stored) == phones


async def test_lazy_function_maybe_and_sync_post_generation(db_session: AsyncSession) -> None:
    assigned = await DeclaredContactFactory.create(renamed="+1234")
    loose = await DeclaredContactFactory.create(unassigned=True)

    assert assigned.campaign is not None
    assert assigned.phone == "+1234"
    await db_session.flush()
    assert await db_session.scalar(select(Contact.phone).where(Contact.id == assigned.id)) == "+1234"
    assert loose.campaign is None


async def test_async_post_generation_runs_after_the_flush_and_may_create(db_session: AsyncSession) -> None:
    contact = await DeclaredContactFactory.create(siblings=2)

    assert contact.campaign is not None
    assert len(contact.campaign.contacts) == 3


async def test_faker_values_replay_with_the_same_seed(db_session: AsyncSession) -> None:
    class NamedOwnerFactory(ModelFactory[Owner]):
        class Meta:
            model = Owner

        name = factory.Faker("name")

    factory.random.reseed_random(7)
    first = [o.name for o in NamedOwnerFactory.build_batch(5)]
    factory.random.reseed_random(7)
    again = [o.name for o in NamedOwnerFactory.build_batch(5)]
    assert first == again


# -- Values derived from the model ---------------------------------------------------------------


async def test_undeclared_required_columns_get_valid_distinct_values(db_session: AsyncSession) -> None:
    accounts = await AccountFactory.create_batch(30)

    account = accounts[0]
    assert len({a.email for a in accounts}) == 30
    assert all(len(a.email) <= 40 for a in accounts)
    assert len({a.token for a in accounts}) == 30
    assert isinstance(account.plan, Plan)
    assert isinstance(account.balance, Decimal)
    assert account.active is False
    assert account.settings == {}
    assert account.owner.id is not None  # the required foreign key came from OwnerFactory
    stored = await db_session.scalar(select(func.count()).select_from(Account))
    assert stored == 30


async def test_declared_and_passed_values_win_over_derived_ones(db_session: AsyncSession) -> None:
    owner = await OwnerFactory.create(name="Ada")
    account = await AccountFactory.create(email="ada@example.com", owner=owner)

    assert account.email == "ada@example.com"
    assert account.owner is owner


async def test_derived_fields_can_be_turned_off() -> None:
    class BareOwnerFactory(ModelFactory[Owner]):
        class Meta:
            model = Owner
            derive_fields = False

    assert BareOwnerFactory.build().name is None


async def test_batches_across_seeds_never_collide(db_session: AsyncSession) -> None:
    for seed in range(20):
        factory.random.reseed_random(seed)
        async with rollback_scope(db_session) as session:
            made = await ContactFactory.create_batch(500, campaign=await CampaignFactory.create())
            assert len({c.id for c in made}) == 500
            assert await session.scalar(select(func.count()).select_from(Contact)) == 500


# -- Clear errors --------------------------------------------------------------------------------


async def test_create_without_a_session_names_the_fixes() -> None:
    with pytest.raises(
        FactoryError, match=r"ContactFactory.create\(\) has no session .*db_session.*use_session"
    ):
        await ContactFactory.create()


async def test_an_unawaited_create_warns_with_the_fix(db_session: AsyncSession) -> None:
    """The warning names the call's line and, from a plain def, that the function must be async."""

    def forget_the_await() -> None:
        ContactFactory.create()

    line = forget_the_await.__code__.co_firstlineno + 1
    with pytest.warns(RuntimeWarning) as warned:
        forget_the_await()
    assert str(warned[0].message) == (
        f"ContactFactory.create() at {__file__.removeprefix(os.getcwd() + os.sep)}:{line} was never awaited, so "
        "nothing was created. forget_the_await is a plain def, which cannot await: declare it `async def` and "
        "write `await ContactFactory.create()`."
    )
    assert await db_session.scalar(select(func.count()).select_from(Contact)) == 0


async def test_an_unawaited_create_in_a_comprehension_of_an_async_def_says_to_await(
    db_session: AsyncSession,
) -> None:
    """A list comprehension has its own frame on Python 3.11: the advice is about the function around it."""
    with pytest.warns(RuntimeWarning) as warned:
        [ContactFactory.create() for _ in range(1)]
    assert str(warned[0].message).endswith(
        "was never awaited, so nothing was created. Write `await ContactFactory.create()`."
    )


async def test_using_an_unawaited_create_as_an_object_fails_at_once(db_session: AsyncSession) -> None:
    with pytest.raises(
        AttributeError, match=r"returns an awaitable, so it has no attribute 'phone'. Write `await"
    ):
        ContactFactory.create().phone  # noqa: B018
    with pytest.raises(TypeError, match="cannot be iterated"):
        list(ContactFactory.create_batch(2))


async def test_a_creation_passed_as_a_value_is_refused(db_session: AsyncSession) -> None:
    with pytest.raises(
        FactoryError, match=r"ContactFactory.campaign got CampaignFactory.create\(\).*SubFactory"
    ):
        await ContactFactory.create(campaign=CampaignFactory.create())


@pytest.mark.parametrize(
    ("option", "value", "advice"),
    [
        ("sqlalchemy_session", None, "create through the test's session"),
        ("sqlalchemy_session_persistence", "commit", "never commit"),
        ("sqlalchemy_get_or_create", ("name",), "get-or-create is not supported"),
    ],
)
def test_factory_boy_sqlalchemy_options_are_refused(option: str, value: Any, advice: str) -> None:
    meta = type("Meta", (), {"model": Owner, option: value})
    with pytest.raises(FactoryError, match=rf"OwnerBadFactory.Meta.{option}: .*{advice}"):
        type("OwnerBadFactory", (ModelFactory,), {"Meta": meta})


async def test_a_duplicate_value_names_the_factory_and_field(db_session: AsyncSession) -> None:
    await CampaignFactory.create(name="same")
    with pytest.raises(FactoryError) as raised:
        await CampaignFactory.create(name="same")

    message = str(raised.value)
    assert "CampaignFactory.create() could not insert its rows" in message
    assert "Field: CampaignFactory.name (declared as Sequence(...); arguments passed in win)" in message
    assert "clashes with a row already in the table" in message
    assert "factory.Sequence" in message
    await db_session.rollback()


async def test_a_value_repeated_within_a_batch_is_shown(db_session: AsyncSession) -> None:
    with pytest.raises(FactoryError, match=r"Values made more than once in this call: '\+1' \(3 times\)"):
        await ContactFactory.create_batch(3, phone="+1")
    await db_session.rollback()


async def test_the_first_bad_value_in_a_batch_is_the_one_reported(db_session: AsyncSession) -> None:
    """Objects are checked in the order they were made, whatever the kind of problem."""
    with pytest.raises(FactoryError) as raised:
        await ContactFactory.create_batch(2, phone=factory.Iterator([None, "+1" + "5" * 30]))
    assert "ContactFactory.phone is None but the column is NOT NULL" in str(raised.value)


async def test_a_too_long_value_is_refused_before_the_insert_on_every_backend(
    db_session: AsyncSession, db_engine: AsyncEngine
) -> None:
    with capture_queries(db_engine) as log, pytest.raises(FactoryError) as raised:
        await ContactFactory.create(phone="+1" + "5" * 30)

    assert "ContactFactory.phone is 32 characters long" in str(raised.value)
    assert "VARCHAR(20)" in str(raised.value)
    assert "declared as Sequence(...)" in str(raised.value)
    assert inserts(log) == []


async def test_a_value_outside_the_enum_is_refused(db_session: AsyncSession) -> None:
    with pytest.raises(FactoryError, match=r"AccountFactory.plan is 'gold', not one of \['FREE', 'PRO'\]"):
        await AccountFactory.create(plan="gold")


async def test_a_required_foreign_key_without_a_factory_says_what_to_declare(
    db_session: AsyncSession,
) -> None:
    with pytest.raises(
        FactoryError, match=r"no factory is registered for Keeper.*keeper = factory.SubFactory"
    ):
        await PetFactory.create()


async def test_a_failed_build_leaves_nothing_behind(db_session: AsyncSession) -> None:
    class BrokenFactory(ModelFactory[Owner]):
        class Meta:
            model = Owner

        name = factory.LazyFunction(lambda: 1 / 0)

    with pytest.raises(ZeroDivisionError):
        await BrokenFactory.create()
    await db_session.flush()
    assert await db_session.scalar(select(func.count()).select_from(Owner)) == 0


async def test_sqlite_keys_follow_rows_inserted_by_other_code(
    db_session: AsyncSession, on_postgres: bool
) -> None:
    await db_session.execute(text("INSERT INTO owners (id, name) VALUES (500, 'raw')"))
    owner = await OwnerFactory.create()
    await db_session.execute(text("INSERT INTO owners (name) VALUES ('after')"))

    if not on_postgres:  # PostgreSQL takes keys from the sequence, harness does not assign them there
        assert owner.id == 501
    rows = (await db_session.execute(select(Owner.id, Owner.name))).all()
    assert sorted(name for _, name in rows) == ["after", "name-" + owner.name.split("-")[1], "raw"]
    assert len({id_ for id_, _ in rows}) == 3


async def test_keys_passed_in_are_kept_and_the_others_follow_them(db_session: AsyncSession) -> None:
    owners = await OwnerFactory.create_batch(3, id=factory.Iterator([None, 900, None]))

    assert owners[1].id == 900
    assert len({owner.id for owner in owners}) == 3


class SmsFactory(ModelFactory[Sms]):
    class Meta:
        model = Sms


async def test_the_inheritance_discriminator_is_left_to_the_orm(db_session: AsyncSession) -> None:
    made = await SmsFactory.create_batch(2)

    db_session.expunge_all()
    loaded = (await db_session.scalars(select(Message).order_by(Message.id))).all()
    assert [type(m) for m in loaded] == [Sms, Sms]
    assert {m.kind for m in loaded} == {"sms"}
    assert {m.id for m in loaded} == {m.id for m in made}


async def test_rows_added_but_not_flushed_by_other_code_keep_their_keys(db_session: AsyncSession) -> None:
    db_session.add(Owner(name="pending"))
    owner = await OwnerFactory.create()

    rows = (await db_session.execute(select(Owner.id, Owner.name))).all()
    assert len(rows) == 2
    assert owner.id in {id_ for id_, _ in rows}


async def test_async_hooks_may_gather_creations(db_session: AsyncSession) -> None:
    class GatheringCampaignFactory(ModelFactory[Campaign]):
        class Meta:
            model = Campaign

        name = factory.Sequence(lambda n: f"gathering {n}")

        @factory.post_generation
        async def contacts(self, create: bool, extracted: int | None, **_: Any) -> None:
            await asyncio.gather(*(ContactFactory.create(campaign=self) for _ in range(extracted or 0)))

    campaign = await asyncio.wait_for(GatheringCampaignFactory.create(contacts=3), timeout=10)

    assert len(campaign.contacts) == 3


async def test_a_failing_hook_leaves_no_coroutine_unawaited(db_session: AsyncSession) -> None:
    class FailingHookFactory(ModelFactory[Owner]):
        class Meta:
            model = Owner

        @factory.post_generation
        async def boom(self, create: bool, extracted: Any, **_: Any) -> None:
            message = "hook failed"
            raise RuntimeError(message)

    with pytest.raises(RuntimeError, match="hook failed"):
        await FailingHookFactory.create_batch(3)  # filterwarnings=error fails the test on a leaked coroutine


def test_factories_declared_inside_tests_do_not_take_over_foreign_keys() -> None:
    class LocalOwnerFactory(ModelFactory[Owner]):
        class Meta:
            model = Owner

        name = "local"

    from harness.factories import _registry

    assert _registry[Owner] is OwnerFactory


async def test_a_missing_required_foreign_key_is_not_called_a_clash(db_session: AsyncSession) -> None:
    with pytest.raises(FactoryError) as raised:
        await AccountFactory.create(owner=None)

    assert "clashes" not in str(raised.value)
    assert "AccountFactory.owner_id" in str(raised.value)


def test_use_session_refuses_what_is_not_a_session() -> None:
    with pytest.raises(TypeError, match=r"use_session\(\) takes an AsyncSession, got str"):
        use_session("postgresql://").__enter__()  # type: ignore[arg-type]


def test_register_factory_refuses_what_is_not_a_model_factory() -> None:
    from harness import register_factory

    with pytest.raises(TypeError, match=r"register_factory\(\) takes a harness\.ModelFactory subclass"):
        register_factory(factory.Factory)  # type: ignore[type-var]


def test_creating_outside_an_awaited_create_is_refused() -> None:
    with pytest.raises(
        FactoryError, match=r"OwnerFactory can only create inside `await OwnerFactory.create\(\)`"
    ):
        OwnerFactory._generate(factory.enums.CREATE_STRATEGY, {})


# -- Core inserts, and the ORM's flush where something depends on it ----------------------------


class TagBase(DeclarativeBase):
    pass


class Tag(TagBase):
    """A primary key from a Python default, children through a one-to-many with no backref."""

    __tablename__ = "factory_tags"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(30))
    labels: Mapped[list[Label]] = relationship()


class Label(TagBase):
    __tablename__ = "factory_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(30))
    tag_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("factory_tags.id"))


class LabelFactory(ModelFactory[Label]):
    class Meta:
        model = Label

    text = factory.Sequence(lambda n: f"label {n}")
    tag_id = None  # given by the tag's one-to-many at insert time


class TagFactory(ModelFactory[Tag]):
    class Meta:
        model = Tag

    name = factory.Sequence(lambda n: f"tag {n}")
    labels = factory.List([factory.SubFactory(LabelFactory) for _ in range(2)])


@pytest.fixture
def orm_flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the ORM's flush ran with something to insert."""
    flushes: list[int] = []
    flush = Session._flush

    def counted(self: Session, objects: Any = None) -> None:
        if self.new:
            flushes.append(len(self.new))
        flush(self, objects)

    monkeypatch.setattr(Session, "_flush", counted)
    return flushes


async def test_plain_batches_skip_the_orm_flush(db_session: AsyncSession, orm_flushes: list[int]) -> None:
    contacts = await ContactFactory.create_batch(20)

    assert orm_flushes == []
    assert all(contact in db_session and inspect(contact).persistent for contact in contacts)


async def test_keys_land_on_the_objects_they_belong_to(db_session: AsyncSession) -> None:
    contacts = await ContactFactory.create_batch(40)

    stored = {row.id: row for row in (await db_session.execute(select(Contact.__table__))).all()}
    for contact in contacts:
        assert stored[contact.id].phone == contact.phone
        assert stored[contact.id].campaign_id == contact.campaign.id == contact.campaign_id


async def test_python_defaults_land_on_the_objects_without_a_select(
    db_session: AsyncSession, db_engine: AsyncEngine
) -> None:
    with capture_queries(db_engine) as log:
        campaigns = await CampaignFactory.create_batch(3)

    assert [campaign.daily_limit for campaign in campaigns] == [125, 125, 125]
    assert not [
        q.sql for q in log.queries if q.sql.lstrip().upper().startswith("SELECT") and "daily_limit" in q.sql
    ]


async def test_python_default_keys_and_one_to_many_without_backref(
    db_session: AsyncSession, orm_flushes: list[int]
) -> None:
    connection = await db_session.connection()
    await connection.run_sync(TagBase.metadata.create_all)  # rolled back with the test's scope

    tags = await TagFactory.create_batch(3)

    assert orm_flushes == []
    stored = (await db_session.execute(select(Label.tag_id, Label.text))).all()
    assert sorted(stored, key=lambda row: row.text) == sorted(
        ((tag.id, label.text) for tag in tags for label in tag.labels), key=lambda row: row[1]
    )
    assert all(isinstance(tag.id, uuid.UUID) for tag in tags)


async def test_a_parent_the_session_holds_keeps_its_collection_loaded_and_unchanged(
    db_session: AsyncSession, db_engine: AsyncEngine
) -> None:
    campaign = await CampaignFactory.create()
    contacts = await ContactFactory.create_batch(3, campaign=campaign)

    assert campaign.contacts == contacts
    assert not db_session.is_modified(campaign)
    assert campaign not in db_session.dirty
    with capture_queries(db_engine) as log:
        await db_session.flush()
    assert log.queries == []


async def test_a_parent_collection_not_loaded_yet_loads_each_child_once(db_session: AsyncSession) -> None:
    campaign = await CampaignFactory.create()
    db_session.expire(campaign, ["contacts"])

    contacts = await ContactFactory.create_batch(3, campaign=campaign)

    assert sorted(c.id for c in await campaign.awaitable_attrs.contacts) == sorted(c.id for c in contacts)


async def test_objects_of_a_rolled_back_savepoint_are_expunged_as_after_a_flush(
    db_session: AsyncSession,
) -> None:
    savepoint = await db_session.begin_nested()
    contact = await ContactFactory.create()
    await savepoint.rollback()

    assert inspect(contact).transient
    assert contact not in db_session
    assert await db_session.scalar(select(func.count()).select_from(Contact)) == 0


async def test_session_flush_listeners_still_see_factory_rows(
    db_session: AsyncSession, orm_flushes: list[int]
) -> None:
    seen: list[Any] = []

    def before_flush(session: Session, *_: Any) -> None:
        seen.extend(obj for obj in session.new if isinstance(obj, Contact))

    event.listen(db_session.sync_session, "before_flush", before_flush)
    try:
        contacts = await ContactFactory.create_batch(2)
    finally:
        event.remove(db_session.sync_session, "before_flush", before_flush)

    assert orm_flushes
    assert sorted(map(id, seen)) == sorted(map(id, contacts))


async def test_mapper_insert_listeners_still_run_for_factory_rows(db_session: AsyncSession) -> None:
    inserted: list[str] = []

    def before_insert(_mapper: Any, _connection: Any, contact: Contact) -> None:
        inserted.append(contact.phone)

    event.listen(Contact, "before_insert", before_insert)
    try:
        contacts = await ContactFactory.create_batch(3)
    finally:
        event.remove(Contact, "before_insert", before_insert)

    assert sorted(inserted) == sorted(contact.phone for contact in contacts)


async def test_a_sql_expression_as_a_value_is_inserted_by_the_orm(
    db_session: AsyncSession, orm_flushes: list[int]
) -> None:
    contact = await ContactFactory.create(phone=func.lower("+1555ABC"))

    assert orm_flushes == [2]  # the contact and its campaign
    assert contact.phone == "+1555abc"  # loaded after the insert, no lazy load
