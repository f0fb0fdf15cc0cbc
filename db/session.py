"""Engine and session factory. SQLite runs in WAL mode with a busy timeout, because the
API and the worker write to the same file. A SQLite transaction takes the write lock when it
begins (BEGIN IMMEDIATE), except one begun by `read_only`: readers never queue for the lock,
nor hold it while their request waits its turn on the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            # a writer takes the write lock up front: no deadlock between two readers upgrading
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        # let SQLAlchemy, not pysqlite, emit BEGIN
        @event.listens_for(engine.sync_engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


READ_ONLY = "yhf_read_only"


async def read_only(session: AsyncSession) -> bool:
    """Begin the session's next transaction as a reader, on SQLite: a deferred BEGIN, a snapshot
    that takes no lock, so it must not write. Answers whether it did: then commit it before
    writing (the next transaction is a writer again). Inside a transaction already begun, and on
    PostgreSQL (whose readers never block its writers), nothing changes and it answers False."""
    if session.in_transaction() or session.get_bind().dialect.name != "sqlite":
        return False
    await session.connection(execution_options={READ_ONLY: True})
    return True


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: committed when the block ends, rolled back when it raises."""
    async with factory() as session, session.begin():
        yield session
