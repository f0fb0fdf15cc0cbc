"""Test helpers: fresh databases, free ports, the simulated gateways, and rows a test needs to
start from."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp

from config import Settings
from db.migrate import upgrade
from db.models import Enrolment, LedgerEntry, Patient, Payment, Visit
from db.pii import Pii, mask_name, mask_phone
from db.session import create_engine
from integrations.factory import Transports
from integrations.inspection import CardEvent, CreditRecordSeen, SimulatorInspection
from simulators import bureau, credit, ebill

PII = Pii("dev-data-key-change-me")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uid(prefix: str = "") -> str:
    return prefix + secrets.token_hex(6)


@asynccontextmanager
async def fresh_database(tmp: Path) -> AsyncIterator[str]:
    """A migrated, empty database for one test session: a SQLite file under `tmp`, or a new
    PostgreSQL database beside YHF_TEST_DATABASE_URL, dropped afterwards."""
    base = os.environ.get("YHF_TEST_DATABASE_URL")
    if not base:
        url = f"sqlite+aiosqlite:///{tmp / 'test.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    parsed = make_url(base)
    name = f"yhf_test_{secrets.token_hex(4)}"
    admin = create_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = parsed.set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@dataclass
class Simulators:
    """The simulated bureau and credit platform of one test, in-process: the API and the worker
    reach them over `transports()`, the test reads what they recorded through `inspect`."""

    bureau: FastAPI
    credit: FastAPI
    inspect: SimulatorInspection
    ebill: FastAPI | None = None  # the fiscal e-bill platform (its records: GET /_sandbox/ebills)

    def transports(self) -> Transports:
        return Transports(
            bureau=httpx.ASGITransport(app=self.bureau),
            credit=httpx.ASGITransport(app=self.credit),
            ebill=httpx.ASGITransport(app=self.ebill) if self.ebill is not None else None,
        )


def sandbox_settings(database_url: str, **overrides: Any) -> Settings:
    """A sandbox's settings for one test: its database, its own task queue, codes that may be
    re-sent after a second and one client IP that may ask often; `overrides` beside."""
    return Settings(
        sandbox=True,
        database_url=database_url,
        task_queue=uid("tq-"),
        sms_code_min_interval=timedelta(seconds=1),
        sms_codes_per_ip_hour=10_000,
        **overrides,
    )


@asynccontextmanager
async def simulators(settings: Settings) -> AsyncIterator[Simulators]:
    """Fresh simulators (in memory) that know the hospital's app ids and secrets."""
    bureau_app = bureau.simulator_app({settings.insurance_bureau_app_id: settings.insurance_bureau_secret})
    credit_app = credit.simulator_app(
        {settings.credit_platform_app_id: settings.credit_platform_secret}, notice_period=settings.pre_default_notice
    )
    ebill_app = ebill.simulator_app(
        {settings.ebill_app_id: settings.ebill_app_key}, {settings.ebill_app_id: settings.ebill_agency_code}
    )
    async with AsyncExitStack() as stack:
        for app in (bureau_app, credit_app, ebill_app):
            stack.callback(app.state.store.close)
        bureau_http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=bureau_app), base_url="http://bureau")
        )
        credit_http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=credit_app), base_url="http://credit")
        )
        yield Simulators(
            bureau_app, credit_app, SimulatorInspection(bureau=bureau_http, credit=credit_http), ebill=ebill_app
        )


async def card_events(sims: Simulators, patient_id: str) -> list[CardEvent]:
    """Every lock and unlock the simulated bureau recorded for the patient, oldest first."""
    return (await sims.inspect.card(patient_id)).events


async def credit_records(sims: Simulators, visit_id: str) -> list[CreditRecordSeen]:
    """Every report and correction the simulated credit platform recorded for the visit."""
    return await sims.inspect.credit_records(visit_id=visit_id)


def now() -> datetime:
    return datetime.now(UTC)


async def add_patient(
    factory: async_sessionmaker[AsyncSession],
    *,
    phone: str = "13800138000",
    enrolled: bool = True,
    insured_locally: bool = True,
) -> str:
    patient_id = uid("pat_")
    async with factory() as session, session.begin():
        session.add(
            Patient(
                id=patient_id,
                name_masked=mask_name("张三丰"),
                name_cipher=PII.encrypt("张三丰"),
                phone_hash=PII.lookup("phone", phone),
                phone_masked=mask_phone(phone),
                phone_cipher=PII.encrypt(phone),
                insured_locally=insured_locally,
                created_at=now(),
            )
        )
        if enrolled:
            await session.flush()
            session.add(
                Enrolment(
                    patient_id=patient_id,
                    active_patient_id=patient_id,
                    agreement_version="2026-01",
                    channel="kiosk",
                    phone_hash=PII.lookup("phone", phone),
                    phone_masked=mask_phone(phone),
                    eligibility_rule="local_insurance",
                    eligibility={},
                    enrolled_at=now(),
                    unenrolled_at=None,
                )
            )
    return patient_id


async def add_visit(factory: async_sessionmaker[AsyncSession], patient_id: str, *, fee: int = 500) -> str:
    visit_id = uid("v")
    async with factory() as session, session.begin():
        session.add(
            Visit(
                id=visit_id,
                patient_id=patient_id,
                department="内科",
                doctor=None,
                channel="kiosk",
                registration_fee_fen=fee,
                request_hash="x",
                stage="registered",
                payment_status="open",
                discharged_at=None,
                arrears_at=None,
                due_at=None,
                created_at=now(),
                updated_at=now(),
            )
        )
    return visit_id


async def pay(
    factory: async_sessionmaker[AsyncSession], patient_id: str, visit_id: str, amount_fen: int, *, method: str = "cash"
) -> str:
    """Money lands in the ledger (as the ops and channel paths record it)."""
    payment_id = uid("pay_")
    async with factory() as session, session.begin():
        session.add(
            Payment(
                id=payment_id,
                patient_id=patient_id,
                method=method,
                amount_fen=amount_fen,
                status="succeeded",
                actor="test",
                created_at=now(),
                completed_at=now(),
            )
        )
        session.add(
            LedgerEntry(
                idempotency_key=f"{payment_id}:{visit_id}",
                visit_id=visit_id,
                patient_id=patient_id,
                kind="payment",
                amount_fen=amount_fen,
                payment_id=payment_id,
                created_at=now(),
            )
        )
    return payment_id


async def rows(factory: async_sessionmaker[AsyncSession], model: Any, **where: object) -> list[Any]:
    async with factory() as session:
        stmt = select(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return list((await session.scalars(stmt.order_by(model.id))).all())


@contextmanager
def served(app: ASGIApp) -> Iterator[str]:
    """An ASGI app on a free local port, in a thread, for clients that speak real HTTP."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
