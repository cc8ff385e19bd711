"""Core inserts against the ORM flush: column keys cases (see conftest.py)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from harness import ModelFactory


class B(DeclarativeBase):
    pass


t = Table(
    "g_things",
    B.metadata,
    Column("id", Integer, primary_key=True),
    Column("db label", String(20), key="lbl", default="dflt"),
)


class Thing(B):
    __table__ = t
    __mapper_args__ = {"properties": {"label": t.c.lbl}}  # noqa: RUF012


class ThingFactory(ModelFactory[Thing]):
    class Meta:
        model = Thing


async def test_column_key(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    things = await ThingFactory.create_batch(2)
    assert [x.label for x in things] == ["dflt", "dflt"]
    rows = (await db_session.execute(text('select "db label" from g_things'))).scalars().all()
    assert rows == ["dflt", "dflt"]


seen: list = []
