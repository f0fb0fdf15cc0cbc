"""The outbox of visit notifications (`payment_received`): a row per visit a payment
touched, written in the payment's own transaction, so no commit of money goes untold.
Deliverers claim due rows (FOR UPDATE SKIP LOCKED on PostgreSQL: two never take the same
one), signal outside any transaction, then mark them delivered or due again later."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import VisitNotification
from db.repositories import utcnow

FIRST_TRY = timedelta(seconds=5)  # the API tries at once; the deliverer only after this
CLAIM = timedelta(seconds=30)  # a claimed row is left alone this long (a deliverer that died)


def enqueue(session: AsyncSession, payment_id: str, parts: list[tuple[str, int]]) -> None:
    now = utcnow()
    for visit_id, amount in parts:
        session.add(
            VisitNotification(
                visit_id=visit_id,
                payment_id=payment_id,
                amount_fen=amount,
                created_at=now,
                next_attempt_at=now + FIRST_TRY,
                attempts=0,
            )
        )


async def of_payment(session: AsyncSession, payment_id: str) -> Sequence[VisitNotification]:
    """A payment's notifications, delivered or not: a retried request tells the visits again."""
    return (
        await session.scalars(
            select(VisitNotification).where(VisitNotification.payment_id == payment_id).order_by(VisitNotification.id)
        )
    ).all()


async def claim(session: AsyncSession, limit: int = 100) -> Sequence[VisitNotification]:
    """Due undelivered rows, oldest first, put out of other deliverers' reach for CLAIM."""
    now = utcnow()
    rows = (
        await session.scalars(
            select(VisitNotification)
            .where(VisitNotification.delivered_at.is_(None), VisitNotification.next_attempt_at <= now)
            .order_by(VisitNotification.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row in rows:
        row.next_attempt_at = now + CLAIM
    return rows


async def attempted(
    session: AsyncSession, ids: Sequence[int], *, error: str | None = None, retry_in: timedelta = timedelta(0)
) -> None:
    """Record a delivery attempt: accepted (error None), or due again after `retry_in`."""
    if not ids:
        return
    rows = update(VisitNotification).where(VisitNotification.id.in_(ids))
    await session.execute(rows.values(attempts=VisitNotification.attempts + 1))
    pending = rows.where(VisitNotification.delivered_at.is_(None))
    if error is None:
        await session.execute(pending.values(delivered_at=utcnow(), last_error=None))
    else:
        await session.execute(pending.values(next_attempt_at=utcnow() + retry_in, last_error=error[:300]))
