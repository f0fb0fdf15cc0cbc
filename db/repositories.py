"""Queries shared by the API and the activities. SQL lives here and in activities only."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import AuditLog, CardLockHold, Enrolment, LedgerEntry, Patient, Visit
from domain.bill import Entry, EntryKind, Totals, totals
from domain.policy import PaymentStatus, ServiceStatus, service_status


def utcnow() -> datetime:
    return datetime.now(UTC)


async def visit_totals(session: AsyncSession, visit_id: str) -> Totals:
    rows = await session.execute(
        select(LedgerEntry.kind, func.sum(LedgerEntry.amount_fen))
        .where(LedgerEntry.visit_id == visit_id)
        .group_by(LedgerEntry.kind)
    )
    return totals(Entry(kind=EntryKind(kind), amount_fen=int(total)) for kind, total in rows if total)


async def totals_by_visit(session: AsyncSession, visit_ids: Sequence[str]) -> dict[str, Totals]:
    if not visit_ids:
        return {}
    rows = await session.execute(
        select(LedgerEntry.visit_id, LedgerEntry.kind, func.sum(LedgerEntry.amount_fen))
        .where(LedgerEntry.visit_id.in_(visit_ids))
        .group_by(LedgerEntry.visit_id, LedgerEntry.kind)
    )
    entries: dict[str, list[Entry]] = {v: [] for v in visit_ids}
    for visit_id, kind, total in rows:
        if total:
            entries[visit_id].append(Entry(kind=EntryKind(kind), amount_fen=int(total)))
    return {v: totals(e) for v, e in entries.items()}


async def ledger_lines(session: AsyncSession, visit_id: str) -> Sequence[LedgerEntry]:
    return (
        await session.scalars(select(LedgerEntry).where(LedgerEntry.visit_id == visit_id).order_by(LedgerEntry.id))
    ).all()


def open_charges(entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
    """A visit's charges that no reversal cancelled, from its ledger lines."""
    reversed_ = {e.item_id for e in entries if e.kind == EntryKind.reversal}
    return [e for e in entries if e.kind == EntryKind.charge and e.item_id not in reversed_]


async def open_visits(session: AsyncSession, patient_id: str) -> list[tuple[Visit, Totals]]:
    """The patient's visits that still owe money, oldest first. A written-off debt is not asked
    for (the merged bill), not paid into (allocation) and does not keep the patient enrolled:
    it stays in the books and in receivables only."""
    visits = (
        await session.scalars(
            select(Visit)
            .where(Visit.patient_id == patient_id, Visit.payment_status != PaymentStatus.written_off)
            .order_by(Visit.created_at, Visit.id)
        )
    ).all()
    sums = await totals_by_visit(session, [v.id for v in visits])
    return [(v, sums[v.id]) for v in visits if sums[v.id].balance_fen > 0]


async def patient_service_status(session: AsyncSession, patient_id: str) -> ServiceStatus:
    """From the visits that are late AND still owe money by the ledger: a visit paid whose
    workflow has not caught up yet (Temporal away, a signal pending) suspends nothing."""
    late = dict(
        (
            await session.execute(
                select(Visit.id, Visit.payment_status).where(
                    Visit.patient_id == patient_id, Visit.payment_status.in_(["arrears", "defaulted"])
                )
            )
        ).all()
    )
    sums = await totals_by_visit(session, list(late))
    return service_status([status for visit_id, status in late.items() if sums[visit_id].balance_fen > 0])


async def card_locked(session: AsyncSession, patient_id: str) -> bool:
    held = await session.scalar(
        select(func.count())
        .select_from(CardLockHold)
        .where(CardLockHold.patient_id == patient_id, CardLockHold.released_at.is_(None))
    )
    return bool(held)


async def active_enrolment(session: AsyncSession, patient_id: str) -> Enrolment | None:
    return await session.scalar(select(Enrolment).where(Enrolment.active_patient_id == patient_id))


async def lock_patient(session: AsyncSession, patient_id: str) -> Patient | None:
    """Serialise a transaction on one patient (row lock on PostgreSQL; SQLite takes the write lock at BEGIN)."""
    return await session.scalar(select(Patient).where(Patient.id == patient_id).with_for_update())


_local_mutexes: dict[str, asyncio.Lock] = {}


@asynccontextmanager
async def patient_mutex(factory: async_sessionmaker[AsyncSession], patient_id: str) -> AsyncIterator[None]:
    """Serialise work on one patient that spans a call to another system (so it cannot hold
    a transaction open): a PostgreSQL advisory lock across workers; on SQLite, whose
    deployments run one worker, a lock in this process."""
    async with factory() as session:
        if session.get_bind().dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:8], "big", signed=True)
            async with session.begin():
                await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
                yield
            return
    lock = _local_mutexes.setdefault(patient_id, asyncio.Lock())
    async with lock:
        yield


def audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    reason: str | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    session.add(
        AuditLog(
            at=at or utcnow(),
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            reason=reason,
            detail=detail,
        )
    )
