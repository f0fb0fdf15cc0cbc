"""The ledger's SQL: the only code that adds or changes money rows (`ledger_entry`,
`payment`, `refund`) and the visits' payment notifications written with them. It runs in
the caller's transaction and never commits; the services (charges, payments, refunds)
decide what to write."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry, Payment, Refund, Visit
from domain.bill import EntryKind
from domain.payment import RefundStatus
from ledger import outbox


def new_id(prefix: str, nbytes: int = 8) -> str:
    return prefix + secrets.token_hex(nbytes)


async def add_entry_once(session: AsyncSession, entry: LedgerEntry) -> bool:
    """Add `entry` unless its idempotency key is booked already; True when added."""
    exists = await session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == entry.idempotency_key))
    if exists is not None:
        return False
    session.add(entry)
    return True


def add_entry(session: AsyncSession, entry: LedgerEntry) -> None:
    """An entry whose key is new by construction (a new payment's or refund's id in it)."""
    session.add(entry)


async def charges_of(session: AsyncSession, visit_id: str, item_ids: Sequence[str]) -> Sequence[LedgerEntry]:
    return (
        await session.scalars(
            select(LedgerEntry).where(
                LedgerEntry.visit_id == visit_id,
                LedgerEntry.kind == EntryKind.charge,
                LedgerEntry.item_id.in_(item_ids),
            )
        )
    ).all()


async def add_payment(session: AsyncSession, payment: Payment) -> Payment:
    session.add(payment)
    await session.flush()  # before the entries that refer to it
    return payment


async def payment_for_update(session: AsyncSession, payment_id: str) -> Payment | None:
    return await session.get(Payment, payment_id, with_for_update=True)


async def payment_parts(session: AsyncSession, payment_id: str) -> list[tuple[str, int]]:
    """(visit_id, fen): where a payment landed, in booking order."""
    rows = await session.execute(
        select(LedgerEntry.visit_id, LedgerEntry.amount_fen)
        .where(LedgerEntry.payment_id == payment_id, LedgerEntry.kind == EntryKind.payment)
        .order_by(LedgerEntry.id)
    )
    return [(visit_id, amount) for visit_id, amount in rows.all()]


def notify_visits(session: AsyncSession, payment_id: str, parts: list[tuple[str, int]]) -> None:
    """The visits' notifications of a payment (the outbox), in the payment's transaction."""
    outbox.enqueue(session, payment_id, parts)


async def visits_of(session: AsyncSession, visit_ids: Sequence[str], patient_id: str | None = None) -> Sequence[Visit]:
    stmt = select(Visit).where(Visit.id.in_(visit_ids))
    if patient_id is not None:
        stmt = stmt.where(Visit.patient_id == patient_id)
    return (await session.scalars(stmt)).all()


async def net_by_payment(session: AsyncSession, visit_id: str) -> list[tuple[str, str, int, int]]:
    """(payment_id, kind, fen, newest entry id) of the visit's entries that carry a payment."""
    rows = await session.execute(
        select(LedgerEntry.payment_id, LedgerEntry.kind, func.sum(LedgerEntry.amount_fen), func.max(LedgerEntry.id))
        .where(LedgerEntry.visit_id == visit_id, LedgerEntry.payment_id.is_not(None))
        .group_by(LedgerEntry.payment_id, LedgerEntry.kind)
    )
    return [(str(p), str(k), int(total), int(last)) for p, k, total, last in rows.all() if p is not None]


async def refunds_asked(session: AsyncSession, payment_id: str) -> int:
    """What refunds of this payment took or are taking back (all but the refused ones)."""
    asked = await session.scalar(
        select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
            Refund.payment_id == payment_id, Refund.status != RefundStatus.failed
        )
    )
    return int(asked or 0)


async def add_refund(session: AsyncSession, refund: Refund, *, at: datetime) -> Refund:
    """A refund and its `refund` entry: the credit leaves the visit when it is asked for."""
    session.add(refund)
    await session.flush()
    add_entry(
        session,
        LedgerEntry(
            idempotency_key=f"refund:{refund.id}",
            visit_id=refund.visit_id,
            patient_id=refund.patient_id,
            kind=EntryKind.refund,
            amount_fen=refund.amount_fen,
            payment_id=refund.payment_id,
            created_at=at,
        ),
    )
    return refund


async def refund_for_update(session: AsyncSession, refund_id: str) -> Refund | None:
    return await session.get(Refund, refund_id, with_for_update=True)
