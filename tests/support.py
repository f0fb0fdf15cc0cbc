"""Test helpers: fresh databases, free ports, and rows a test needs to start from."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.migrate import upgrade
from db.models import Enrolment, LedgerEntry, Patient, Payment, Visit
from db.pii import Pii, mask_name, mask_phone
from db.session import create_engine

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


def now() -> datetime:
    return datetime.now(timezone.utc)


async def add_patient(factory: async_sessionmaker[AsyncSession], *, phone: str = "13800138000",
                      enrolled: bool = True, insured_locally: bool = True) -> str:
    patient_id = uid("pat_")
    async with factory() as session, session.begin():
        session.add(Patient(id=patient_id, name_masked=mask_name("张三丰"), name_cipher=PII.encrypt("张三丰"),
                            phone_hash=PII.lookup("phone", phone), phone_masked=mask_phone(phone),
                            phone_cipher=PII.encrypt(phone), insured_locally=insured_locally, created_at=now()))
        if enrolled:
            await session.flush()
            session.add(Enrolment(patient_id=patient_id, active_patient_id=patient_id, agreement_version="2026-01",
                                  channel="kiosk", phone_hash=PII.lookup("phone", phone),
                                  phone_masked=mask_phone(phone), eligibility_rule="local_insurance",
                                  eligibility={}, enrolled_at=now(), unenrolled_at=None))
    return patient_id


async def add_visit(factory: async_sessionmaker[AsyncSession], patient_id: str, *, fee: int = 500) -> str:
    visit_id = uid("v")
    async with factory() as session, session.begin():
        session.add(Visit(id=visit_id, patient_id=patient_id, department="内科", doctor=None, channel="kiosk",
                          registration_fee_fen=fee, request_hash="x", stage="registered", payment_status="open",
                          discharged_at=None, arrears_at=None, due_at=None, created_at=now(), updated_at=now()))
    return visit_id


async def pay(factory: async_sessionmaker[AsyncSession], patient_id: str, visit_id: str, amount_fen: int, *,
              method: str = "cash") -> str:
    """Money lands in the ledger (as the ops and channel paths record it)."""
    payment_id = uid("pay_")
    async with factory() as session, session.begin():
        session.add(Payment(id=payment_id, patient_id=patient_id, method=method, amount_fen=amount_fen,
                            status="succeeded", actor="test", created_at=now(), completed_at=now()))
        session.add(LedgerEntry(idempotency_key=f"{payment_id}:{visit_id}", visit_id=visit_id, patient_id=patient_id,
                                kind="payment", amount_fen=amount_fen, payment_id=payment_id, created_at=now()))
    return payment_id


async def rows(factory: async_sessionmaker[AsyncSession], model: type, **where: object) -> list:
    async with factory() as session:
        stmt = select(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return list((await session.scalars(stmt.order_by(model.id))).all())


@contextmanager
def served(app: object) -> Iterator[str]:
    """An ASGI app on a free local port, in a thread, for clients that speak real HTTP."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
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
