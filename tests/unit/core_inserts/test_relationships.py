"""Core inserts against the ORM flush: relationships cases (see conftest.py)."""

from __future__ import annotations

import uuid

import factory
from sqlalchemy import ForeignKey, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship

from harness import ModelFactory


class B(DeclarativeBase):
    pass


# relationship without a ForeignKey constraint (legacy schema), parent key from a Python default
class Shop(B):
    __tablename__ = "p_shops"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class Order(B):
    __tablename__ = "p_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[uuid.UUID | None]
    shop: Mapped[Shop | None] = relationship(primaryjoin=lambda: foreign(Order.shop_id) == Shop.id)


class ShopFactory(ModelFactory[Shop]):
    class Meta:
        model = Shop


class OrderFactory(ModelFactory[Order]):
    class Meta:
        model = Order

    shop = factory.SubFactory(ShopFactory)


async def test_no_fk_constraint(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    orders = await OrderFactory.create_batch(3)
    rows = (await db_session.execute(select(Order.id, Order.shop_id))).all()
    assert sorted(rows) == sorted((o.id, o.shop.id) for o in orders)
    assert all(r.shop_id is not None for r in rows)


# one-to-one, unique foreign key
class User(B):
    __tablename__ = "p_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    profile: Mapped[Profile | None] = relationship(back_populates="user")


class Profile(B):
    __tablename__ = "p_profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("p_users.id"), unique=True)
    user: Mapped[User | None] = relationship(back_populates="profile")


class UserFactory(ModelFactory[User]):
    class Meta:
        model = User


class ProfileFactory(ModelFactory[Profile]):
    class Meta:
        model = Profile

    user = factory.SubFactory(UserFactory)


async def test_one_to_one_replace(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    old = await ProfileFactory.create()
    user = old.user
    new = await ProfileFactory.create(user=user)
    assert user.profile is new
    rows = (
        await (await db_session.connection()).execute(text("select id, user_id from p_profiles order by id"))
    ).all()
    assert [tuple(r) for r in rows] == [(old.id, None), (new.id, user.id)]


# backref declared on the many-to-one side
class Team(B):
    __tablename__ = "p_teams"
    id: Mapped[int] = mapped_column(primary_key=True)


class Player(B):
    __tablename__ = "p_players"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("p_teams.id"))
    team: Mapped[Team] = relationship(backref="players")


class TeamFactory(ModelFactory[Team]):
    class Meta:
        model = Team


class PlayerFactory(ModelFactory[Player]):
    class Meta:
        model = Player

    team = factory.SubFactory(TeamFactory)


async def test_backref_keyword(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    team = await TeamFactory.create()
    players = await PlayerFactory.create_batch(2, team=team)
    assert team.players == players
    assert not db_session.is_modified(team)
    assert team not in db_session.dirty


# pending object added by the test before create()
async def test_pending_objects_flushed(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    team = Team()
    db_session.add(team)
    await PlayerFactory.create()
    assert team.id is not None


# a parent whose truthiness does work: harness must not ask for it
class Crew(B):
    __tablename__ = "p_crews"
    id: Mapped[int] = mapped_column(primary_key=True)
    hands: Mapped[list[Hand]] = relationship(back_populates="crew")

    def __len__(self) -> int:  # reads a relationship: lazy IO, MissingGreenlet in async code
        return len(self.hands)


class Hand(B):
    __tablename__ = "p_hands"
    id: Mapped[int] = mapped_column(primary_key=True)
    crew_id: Mapped[int] = mapped_column(ForeignKey("p_crews.id"))
    crew: Mapped[Crew] = relationship(back_populates="hands")


class HandFactory(ModelFactory[Hand]):
    class Meta:
        model = Hand


async def test_parent_truthiness_is_not_evaluated(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    crew = Crew()
    db_session.add(crew)
    await db_session.commit()
    db_session.expire(crew, ["hands"])
    hands = await HandFactory.create_batch(2, crew=crew)
    assert [hand.crew_id for hand in hands] == [crew.id, crew.id]
