"""Session-wide real services: a migrated database and a Temporal dev server with
per-workflow time skipping. Each test gets its own worker on its own task queue, and its own
simulated bureau, credit platform and fiscal e-bill platform (in-process, over ASGI: their
transports from tests/support.py), which its API and worker share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from config import Settings
from db.session import create_engine, session_factory
from devstack import search_attribute_args, temporal_cli as find_temporal_cli
from integrations.factory import Integrations, build_integrations
from tests.support import Simulators, fresh_database, sandbox_settings, simulators as start_simulators
from worker import create_worker


def temporal_cli() -> str:
    return find_temporal_cli()


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
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
            "--log-level",
            "error",
            *search_attribute_args(),
        ],
    )
    async with env:
        yield env


@pytest.fixture
def settings(database_url: str) -> Settings:
    # codes may be re-sent after a second (not a minute), and one test client IP may ask often
    return sandbox_settings(database_url)


@pytest.fixture
async def simulators(settings: Settings) -> AsyncIterator[Simulators]:
    """This test's simulated bureau, credit platform and e-bill platform (in memory)."""
    async with start_simulators(settings) as sims:
        yield sims


@pytest.fixture
async def integrations(settings: Settings, simulators: Simulators) -> AsyncIterator[Integrations]:
    """The clients of the other parties, reaching this test's simulators: one set for its API and worker."""
    async with AsyncExitStack() as stack:
        yield build_integrations(settings, stack, transports=simulators.transports())


@pytest.fixture
async def worker(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    factory: async_sessionmaker[AsyncSession],
    integrations: Integrations,
) -> AsyncIterator[str]:
    """A worker for this test alone; yields its task queue."""
    async with AsyncExitStack() as stack:
        w = create_worker(temporal_env.client, settings, factory, stack, integrations=integrations)
        async with w:
            yield settings.task_queue


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, settings: Settings, worker: str, integrations: Integrations
) -> AsyncIterator[ApiClient]:
    """The API in-process over ASGI, against the real dev server (no time skipping) and
    this test's worker."""
    client = await Client.connect(temporal_env.client.service_client.config.target_host)
    app = create_app(settings, temporal=client, integrations=integrations)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as http:
            yield ApiClient(http, settings)


class ApiClient:
    """An httpx client with the HIS and ops keys at hand."""

    def __init__(self, http, settings: Settings) -> None:
        self.http = http
        self.his = {"Authorization": f"Bearer {settings.his_api_key}"}
        self.ops = {"Authorization": f"Bearer {settings.ops_api_key}"}

    async def his_post(self, path: str, body: object, **kw):
        return await self.http.post(path, json=body, headers={**self.his, **kw.pop("headers", {})}, **kw)

    async def his_get(self, path: str, **kw):
        return await self.http.get(path, headers=self.his, **kw)

    async def ops_post(self, path: str, body: object, **kw):
        return await self.http.post(path, json=body, headers={**self.ops, **kw.pop("headers", {})}, **kw)
