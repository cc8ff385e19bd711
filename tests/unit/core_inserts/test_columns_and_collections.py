"""Core inserts against the ORM flush: JSON None, dict collections, column names, unmapped default columns."""

from __future__ import annotations

from typing import Any

import factory
from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Table, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, attribute_keyed_dict, mapped_column, relationship

from harness import ModelFactory


class B(DeclarativeBase):
    pass


class Doc(B):
    __tablename__ = "p_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    conf: Mapped[Any] = mapped_column(JSON, nullable=True, default=lambda: {"x": 1})


class DocFactory(ModelFactory[Doc]):
    class Meta:
        model = Doc

    data = None
    conf = None


async def test_json_none(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    doc = await DocFactory.create()
    # JSON null, not SQL NULL: None is a value for JSON columns (and the default does not apply)
    row = (await db_session.execute(text("select data is null, conf is null from p_docs"))).one()
    assert not any(row)
    assert doc.conf is None


class Folder(B):
    __tablename__ = "p_folders"
    id: Mapped[int] = mapped_column(primary_key=True)
    notes: Mapped[dict[str, Note]] = relationship(
        collection_class=attribute_keyed_dict("name"), back_populates="folder"
    )


class Note(B):
    __tablename__ = "p_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    folder_id: Mapped[int] = mapped_column(ForeignKey("p_folders.id"))
    folder: Mapped[Folder] = relationship(back_populates="notes")


class FolderFactory(ModelFactory[Folder]):
    class Meta:
        model = Folder


class NoteFactory(ModelFactory[Note]):
    class Meta:
        model = Note

    name = factory.Sequence(lambda n: f"n{n}")
    folder = factory.SubFactory(FolderFactory)


async def test_dict_collection(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    notes = await NoteFactory.create_batch(2)
    assert all(n.folder.notes == {n.name: n} for n in notes)


# Column name and key differ from the attribute; unmapped column with a Python default
t = Table(
    "p_things",
    B.metadata,
    Column("id", Integer, primary_key=True),
    Column("db label", String(20), key="lbl", default="dflt"),
    Column("audit", String(20), default="made-by-default"),
)


class Thing(B):
    __table__ = t
    __mapper_args__ = {"properties": {"label": t.c.lbl}, "exclude_properties": ["audit"]}  # noqa: RUF012


class ThingFactory(ModelFactory[Thing]):
    class Meta:
        model = Thing


async def test_column_key_and_unmapped_default(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    things = await ThingFactory.create_batch(2)
    assert [x.label for x in things] == ["dflt", "dflt"]
    rows = (await db_session.execute(text('select "db label", audit from p_things'))).all()
    assert [tuple(r) for r in rows] == [("dflt", "made-by-default")] * 2


class Named(B):
    __tablename__ = "p_named"
    id: Mapped[int] = mapped_column("named_id", primary_key=True)
    title: Mapped[str] = mapped_column("the_title", String(20), default="t")
    parent_id: Mapped[int | None] = mapped_column("parent_ref", ForeignKey("p_folders.id"))
    parent: Mapped[Folder | None] = relationship()


class NamedFactory(ModelFactory[Named]):
    class Meta:
        model = Named

    parent = factory.SubFactory(FolderFactory)


async def test_renamed_columns(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    xs = await NamedFactory.create_batch(3)
    rows = (
        await db_session.execute(
            text("select named_id, the_title, parent_ref from p_named order by named_id")
        )
    ).all()
    assert [tuple(r) for r in rows] == sorted((x.id, x.title, x.parent.id) for x in xs)


class Task(B):
    __tablename__ = "p_tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(10), default="open")
    owner: Mapped[str] = mapped_column(String(10), server_default="nobody")
    note: Mapped[str | None] = mapped_column(String(20))
    done: Mapped[str | None] = mapped_column(String(10), nullable=True, server_default="no")


class TaskFactory(ModelFactory[Task]):
    class Meta:
        model = Task

    title = factory.Sequence(lambda n: f"t{n}")
    # Every other row leaves these unset: its defaults apply, the others' values stay.
    state = factory.Sequence(lambda n: "closed" if n % 2 else None)
    owner = factory.Sequence(lambda n: "ann" if n % 2 else None)
    note = factory.Sequence(lambda n: "a note" if n % 2 else None)
    done = None


async def test_rows_that_set_different_columns(db_session: AsyncSession, path: str) -> None:
    await (await db_session.connection()).run_sync(B.metadata.create_all)
    tasks = await TaskFactory.create_batch(4)
    rows = (
        await db_session.execute(text("select title, state, owner, note, done from p_tasks order by id"))
    ).all()
    odd = [int(task.title[1:]) % 2 for task in tasks]
    assert odd in ([0, 1, 0, 1], [1, 0, 1, 0])
    assert [tuple(row) for row in rows] == [
        (task.title, *(("closed", "ann", "a note") if n else ("open", "nobody", None)), "no")
        for n, task in zip(odd, tasks, strict=True)
    ]
    assert [(task.state, task.owner, task.done) for task in tasks] == [
        (row.state, row.owner, "no") for row in rows
    ]
