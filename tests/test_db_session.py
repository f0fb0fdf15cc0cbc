"""db/session.py on SQLite: a writer's transaction takes the write lock when it begins, a
reader's (`read_only`) takes none, so a booking in the worker never queues behind an API
request that only reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from db.session import create_engine, read_only, session_factory


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'lock.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
        await conn.execute(text("INSERT INTO t VALUES (1)"))
    yield engine, session_factory(engine)
    await engine.dispose()


async def write_now(engine: AsyncEngine) -> None:
    """A writer on a connection of its own that refuses to wait for the lock."""
    other = create_async_engine(engine.url, connect_args={"timeout": 0})
    try:
        async with other.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        await other.dispose()


async def test_a_reader_holds_no_write_lock_and_keeps_its_snapshot(sqlite) -> None:
    engine, factory = sqlite
    async with factory() as reader:
        assert await read_only(reader)
        assert (await reader.scalar(text("SELECT count(*) FROM t"))) == 1
        await asyncio.wait_for(write_now(engine), 5)  # not blocked by the open reader
        assert (await reader.scalar(text("SELECT count(*) FROM t"))) == 1  # its snapshot
        await reader.commit()
        # the next transaction is a writer's again, and sees the write
        assert (await reader.scalar(text("SELECT count(*) FROM t"))) == 2
        with pytest.raises(OperationalError, match="locked"):
            await write_now(engine)  # this session now holds the write lock
        await reader.rollback()


async def test_a_writer_takes_the_write_lock_when_it_begins(sqlite) -> None:
    engine, factory = sqlite
    async with factory() as writer:
        assert (await writer.scalar(text("SELECT count(*) FROM t"))) == 1  # a read, yet it holds the lock
        with pytest.raises(OperationalError, match="locked"):
            await write_now(engine)
        await writer.rollback()
    await write_now(engine)


async def test_read_only_inside_a_begun_transaction_changes_nothing(sqlite) -> None:
    engine, factory = sqlite
    async with factory() as session:
        await session.execute(text("SELECT 1"))
        assert not await read_only(session)  # too late: already a writer
        with pytest.raises(OperationalError, match="locked"):
            await write_now(engine)
        await session.rollback()


async def test_only_sqlite_begins_a_reader(factory) -> None:
    """The suite's database: PostgreSQL's readers never block its writers, so a request reads and
    writes in one transaction there; on SQLite it reads in a reader's."""
    async with factory() as session:
        began = await read_only(session)
        assert began == (session.get_bind().dialect.name == "sqlite")
        await session.rollback()
