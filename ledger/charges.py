"""Charges: the registration fee and the items a visit's events order or cancel. Every
entry is keyed by the visit and the item, so a retried step books nothing twice.

The registration fee has one writer, `book_registration_fee`, under one key: the API calls
it in the transaction that creates the visit (so the fee is on the bill before the visit's
workflow exists); the workflow's first step calls it again, which confirms it (and books it
only for a visit written without it, as tests do)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry
from db.repositories import utcnow
from domain.bill import EntryKind
from ledger import repository as repo
from workflows import contracts as c


def registration_key(visit_id: str) -> str:
    return f"visit-{visit_id}:registration"


async def book_registration_fee(session: AsyncSession, *, visit_id: str, patient_id: str, fee_fen: int) -> bool:
    """The visit's registration fee, once; True when booked by this call."""
    if fee_fen <= 0:
        return False
    added = await repo.add_entry_once(
        session,
        LedgerEntry(
            idempotency_key=registration_key(visit_id),
            visit_id=visit_id,
            patient_id=patient_id,
            kind=EntryKind.charge,
            amount_fen=fee_fen,
            code="REG",
            name="挂号费",
            category="other",
            unit_price_fen=fee_fen,
            quantity=1,
            created_at=utcnow(),
        ),
    )
    await session.flush()
    return added


async def book_charges(
    session: AsyncSession, *, visit_id: str, patient_id: str, items: Sequence[c.ItemInput], at: datetime
) -> None:
    """One charge per ordered item (an item booked before is not booked again)."""
    for item in items:
        await repo.add_entry_once(
            session,
            LedgerEntry(
                idempotency_key=f"visit-{visit_id}:charge:{item.item_id}",
                visit_id=visit_id,
                patient_id=patient_id,
                kind=EntryKind.charge,
                amount_fen=item.unit_price_fen * item.quantity,
                item_id=item.item_id,
                code=item.code,
                name=item.name,
                category=item.category,
                unit_price_fen=item.unit_price_fen,
                quantity=item.quantity,
                created_at=at,
            ),
        )


async def reverse_charges(
    session: AsyncSession, *, visit_id: str, patient_id: str, item_ids: Sequence[str], at: datetime
) -> None:
    """A reversal of each cancelled item's charge, once."""
    if not item_ids:
        return
    for charge in await repo.charges_of(session, visit_id, item_ids):
        await repo.add_entry_once(
            session,
            LedgerEntry(
                idempotency_key=f"visit-{visit_id}:reverse:{charge.item_id}",
                visit_id=visit_id,
                patient_id=patient_id,
                kind=EntryKind.reversal,
                amount_fen=charge.amount_fen,
                item_id=charge.item_id,
                code=charge.code,
                name=charge.name,
                category=charge.category,
                unit_price_fen=charge.unit_price_fen,
                quantity=charge.quantity,
                created_at=at,
            ),
        )
