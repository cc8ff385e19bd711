"""Core inserts against the ORM flush: composite keys cases (see conftest.py)."""

from __future__ import annotations

import datetime as dt
import gc

import factory
from sqlalchemy import ForeignKey, func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from harness import ModelFactory


class B(DeclarativeBase):
    pass


class Course(B):
    __tablename__ = "f_courses"
    id: Mapped[int] = mapped_column(primary_key=True)


class Seat(B):
    __tablename__ = "f_seats"
    course_id: Mapped[int] = mapped_column(ForeignKey("f_courses.id"), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(server_default=func.current_timestamp())
    course: Mapped[Course] = relationship()


class CourseFactory(ModelFactory[Course]):
    class Meta:
        model = Course


class SeatFactory(ModelFactory[Seat]):
    class Meta:
        model = Seat

    number = factory.Sequence(int)
    course = factory.SubFactory(CourseFactory)


async def test_composite_key_with_server_default(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    seats = await SeatFactory.create_batch(2)
    gc.collect()
    assert all(s.course.id == s.course_id for s in seats)  # core: lazy load -> MissingGreenlet
