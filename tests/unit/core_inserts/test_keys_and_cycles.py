"""Core inserts against the ORM flush: keys and cycles cases (see conftest.py)."""

from __future__ import annotations

import datetime as dt

import factory
from sqlalchemy import ForeignKey, String, func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column, relationship

from harness import ModelFactory


class B(DeclarativeBase):
    pass


# Mutually dependent foreign keys (users.team_id -> teams, teams.owner_id -> users)
class Person(B):
    __tablename__ = "p_people"
    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("p_groups.id"))
    group: Mapped[Group | None] = relationship(foreign_keys=[group_id])


class Group(B):
    __tablename__ = "p_groups"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("p_people.id"))


class GroupFactory(ModelFactory[Group]):
    class Meta:
        model = Group


class PersonFactory(ModelFactory[Person]):
    class Meta:
        model = Person

    group = factory.SubFactory(GroupFactory)


async def test_fk_cycle(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    people = await PersonFactory.create_batch(2)
    assert all(p.group_id == p.group.id for p in people)


# composite primary key made of two foreign keys; string key parent
class Course(B):
    __tablename__ = "p_courses"
    code: Mapped[str] = mapped_column(String(10), primary_key=True)


class Enrolment(B):
    __tablename__ = "p_enrolments"
    course_code: Mapped[str] = mapped_column(ForeignKey("p_courses.code"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("p_people.id"), primary_key=True)
    course: Mapped[Course] = relationship()
    person: Mapped[Person] = relationship()
    updated: Mapped[dt.datetime] = mapped_column(
        server_default=func.current_timestamp(), onupdate=func.current_timestamp()
    )


class CourseFactory(ModelFactory[Course]):
    class Meta:
        model = Course

    code = factory.Sequence(lambda n: f"C{n}")


class EnrolmentFactory(ModelFactory[Enrolment]):
    class Meta:
        model = Enrolment

    course = factory.SubFactory(CourseFactory)
    person = factory.SubFactory(PersonFactory, group=None)


async def test_composite(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    es = await EnrolmentFactory.create_batch(3)

    assert all(e.updated is not None for e in es)
    assert await db_session.get(Enrolment, (es[0].course_code, es[0].person_id)) is es[0]
    person, pid = es[0].person, es[0].person_id
    db_session.expire_all()
    more = await EnrolmentFactory.create_batch(2, person=person)
    assert [m.person_id for m in more] == [pid] * 2


# set collection
class Box(B):
    __tablename__ = "p_boxes"
    id: Mapped[int] = mapped_column(primary_key=True)
    items: Mapped[set[Item]] = relationship(back_populates="box")


class Item(B):
    __tablename__ = "p_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    box_id: Mapped[int] = mapped_column(ForeignKey("p_boxes.id"))
    box: Mapped[Box] = relationship(back_populates="items")


class BoxFactory(ModelFactory[Box]):
    class Meta:
        model = Box


class ItemFactory(ModelFactory[Item]):
    class Meta:
        model = Item

    box = factory.SubFactory(BoxFactory)


async def test_set_collection(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    box = await BoxFactory.create()
    items = await ItemFactory.create_batch(3, box=box)
    assert box.items == set(items)
    items2 = await ItemFactory.create_batch(2)
    assert all(i.box.items == {i} for i in items2)


class D(MappedAsDataclass, DeclarativeBase):
    pass


class Note(D):
    __tablename__ = "p_dc_notes"
    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    body: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(10), default="new")
    extra: Mapped[str | None] = mapped_column(String(10), default=None, init=False)


class NoteFactory(ModelFactory[Note]):
    class Meta:
        model = Note

    body = "hi"


async def test_dataclass(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(D.metadata.create_all)
    ns = await NoteFactory.create_batch(2)
    rows = (
        await db_session.execute(text("select id, body, status, extra from p_dc_notes order by id"))
    ).all()
    assert [tuple(r) for r in rows] == [(n.id, "hi", "new", None) for n in ns]
