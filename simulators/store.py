"""Each simulator's own storage: a SQLite file given on the command line, or memory for tests,
under the simulator's own metadata (never the product's tables).

A simulator answers one request at a time: every transaction holds the store's lock, which is
what the real side's row locks would give, and keeps an in-memory SQLite on one connection."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import DateTime, MetaData, create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware in, aware (UTC) out: SQLite keeps no offset."""

    impl = DateTime()
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Store:
    """One simulator's database: `path` a SQLite file, None memory (gone with the process)."""

    def __init__(self, metadata: MetaData, path: str | Path | None = None) -> None:
        if path:
            self._engine = create_engine(f"sqlite:///{path}")
        else:
            self._engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        metadata.create_all(self._engine)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._lock, self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self._engine.dispose()


def serve(app: FastAPI, port: int) -> None:
    """Serve on 127.0.0.1 (SIMULATOR_HOST=0.0.0.0 in a container, to be reached from the others)."""
    uvicorn.run(app, host=os.environ.get("SIMULATOR_HOST", "127.0.0.1"), port=port, log_level="warning")
