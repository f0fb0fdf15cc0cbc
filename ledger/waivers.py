"""Waivers (减免): what the hospital gives up of a visit's bill.

A waiver is its own ledger entry (kind `waiver`), keyed by the operator action that decided
it, so a retried step books it once; it lowers the balance, never what was paid, and never
below nothing. A write-off books nothing: the debt stays in the books and the visit's
status says it was given up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry
from db.repositories import visit_totals
from domain.bill import EntryKind
from ledger import repository as repo
from ledger.errors import AmountExceedsBalance


async def book_waiver(
    session: AsyncSession, *, visit_id: str, patient_id: str, amount_fen: int, key: str, reason: str, at: datetime
) -> bool:
    """Waive `amount_fen` of the visit's balance once under `key`; True when booked now.
    More than the balance (a payment landed since the action was accepted) is refused."""
    if amount_fen <= 0:
        raise ValueError("a waiver is a positive amount")
    if await session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key)) is not None:
        return False
    balance = (await visit_totals(session, visit_id)).balance_fen
    if amount_fen > balance:
        raise AmountExceedsBalance(f"a waiver of {amount_fen} fen is more than the balance of {balance} fen")
    return await repo.add_entry_once(
        session,
        LedgerEntry(
            idempotency_key=key,
            visit_id=visit_id,
            patient_id=patient_id,
            kind=EntryKind.waiver,
            amount_fen=amount_fen,
            code="WAIVER",
            name=f"减免: {reason}"[:200],
            created_at=at,
        ),
    )
