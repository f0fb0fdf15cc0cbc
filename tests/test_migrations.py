"""The migrations build exactly the tables the models declare, and go down and up again: a
model changed without its migration (or the reverse) fails here, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from db import nhsa, oversight  # noqa: F401  (their tables join Base.metadata)
from db.migrate import alembic_config
from db.models import Base
from db.session import create_engine
from tests.support import fresh_database


def differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


async def schema_differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(differences)
    finally:
        await engine.dispose()


async def test_migrations_match_the_models_and_go_down_and_up(tmp_path: Path) -> None:
    async with fresh_database(tmp_path) as url:
        assert await schema_differences(url) == []
        cfg = alembic_config(url)
        await asyncio.to_thread(command.downgrade, cfg, "base")
        assert await schema_differences(url) != []  # the walk down did remove the tables
        await asyncio.to_thread(command.upgrade, cfg, "head")
        assert await schema_differences(url) == []
