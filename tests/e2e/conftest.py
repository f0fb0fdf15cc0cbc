"""The stack as processes, shared by the end-to-end tests of this folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from devstack import Stack
from tests.flows import Clinic
from tests.support import free_port, fresh_database

SHORT = {
    "YHF_ARREARS_AFTER": "PT4S",
    "YHF_DEFAULT_AFTER": "PT12S",
    "YHF_DUNNING_EVERY": "PT3S",
    "YHF_PRE_DEFAULT_NOTICE": "PT4S",
    "YHF_SMS_QUIET_HOURS": "",
    "YHF_RECONCILE_EVERY": "PT2S",
    "YHF_RECONCILE_AFTER": "PT1S",
    "YHF_ORDER_EXPIRES_AFTER": "PT8S",
    # many sign-ins from one test machine, seconds apart
    "YHF_SMS_CODE_MIN_INTERVAL": "PT1S",
    "YHF_SMS_CODES_PER_IP_HOUR": "100000",
    # the logs as a deployment writes them: the privacy tests read these for personal data
    "YHF_LOG_FORMAT": "json",
}


@asynccontextmanager
async def running_stack(tmp: Path) -> AsyncIterator[Stack]:
    """A stack on free ports with the short durations, in `tmp`, on a fresh database; stopped after."""
    async with fresh_database(tmp) as url:
        s = Stack(
            data_dir=tmp / "data",
            api_port=free_port(),
            temporal_port=free_port(),
            headless=True,
            wechat_port=free_port(),
            alipay_port=free_port(),
            env={**SHORT, "YHF_DATABASE_URL": url},
            log_dir=tmp / "logs",
        )
        await asyncio.to_thread(s.start)
        try:
            yield s
        finally:
            await asyncio.to_thread(s.stop)


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
        yield client


@pytest.fixture
def clinic(http: httpx.AsyncClient) -> Clinic:
    return Clinic.over(http, {"Authorization": "Bearer dev-his-key"})
