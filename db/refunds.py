"""Refunds in the ledger, shared by the API (money beyond the bill when it lands), the
activities (a cancellation freed money on a paid visit) and operators.

A visit whose ledger shows a credit (negative balance) gives it back to the payments that
made it, newest first: one `refund` row and one `refund` ledger entry per payment, in the
caller's transaction, under the patient's lock. The entry is booked when the refund is asked
for, so the same credit is never returned twice; when the channel refuses for good, a
`refund_reversal` entry puts the credit back and operators see the refund as failed."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry, Payment, Refund
from db.repositories import audit, lock_patient, utcnow, visit_totals
from domain.bill import EntryKind, Refundable, plan_refunds
from domain.payment import (Illegal, PaymentEvent, PaymentState, PaymentStatus, RefundStatus, apply,
                            refund_move)

# Money that goes back by hand: handed over at the window, or returned to the insurance fund or
# personal account through the bureau's own refund procedure; an operator confirms each one.
WINDOW_METHODS = ("cash", "card", "insurance", "insurance_pooled", "insurance_personal")


def new_refund_id() -> str:
    return "rfd_" + secrets.token_hex(12)


async def _refundable(session: AsyncSession, visit_id: str) -> list[Refundable]:
    """Per payment on this visit, newest first: what it put on the visit less what already
    went back (refunds asked for, less refunds refused), capped by the payment's own rest."""
    rows = (await session.execute(
        select(LedgerEntry.payment_id, LedgerEntry.kind, func.sum(LedgerEntry.amount_fen),
               func.max(LedgerEntry.id))
        .where(LedgerEntry.visit_id == visit_id, LedgerEntry.payment_id.is_not(None))
        .group_by(LedgerEntry.payment_id, LedgerEntry.kind))).all()
    net: dict[str, int] = {}
    newest: dict[str, int] = {}
    sign = {EntryKind.payment: 1, EntryKind.refund: -1, EntryKind.refund_reversal: 1}
    for payment_id, kind, total, last_id in rows:
        if EntryKind(kind) in sign:
            net[payment_id] = net.get(payment_id, 0) + sign[EntryKind(kind)] * int(total)
            newest[payment_id] = max(newest.get(payment_id, 0), int(last_id))
    out = []
    for payment_id in sorted(net, key=lambda p: newest[p], reverse=True):
        payment = await session.get(Payment, payment_id)
        if payment is None:
            continue
        outstanding = await session.scalar(select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
            Refund.payment_id == payment_id, Refund.status != RefundStatus.failed))
        out.append(Refundable(payment_id=payment_id, fen=min(net[payment_id], payment.amount_fen - int(outstanding))))
    return out


async def refund_credit(session: AsyncSession, *, visit_id: str, patient_id: str, reason: str,
                        actor: str) -> list[Refund]:
    """Ask for the refunds that return this visit's credit; none when it has none. Safe to
    call again: a credit already asked back is no longer a credit."""
    await lock_patient(session, patient_id)
    await session.flush()
    balance = (await visit_totals(session, visit_id)).balance_fen
    if balance >= 0:
        return []
    now = utcnow()
    made = []
    for payment_id, fen in plan_refunds(-balance, await _refundable(session, visit_id)):
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        refund = Refund(id=new_refund_id(), payment_id=payment_id, patient_id=patient_id, visit_id=visit_id,
                        method=payment.method, amount_fen=fen, reason=reason, status=RefundStatus.created,
                        created_at=now)
        session.add(refund)
        await session.flush()
        session.add(LedgerEntry(idempotency_key=f"refund:{refund.id}", visit_id=visit_id, patient_id=patient_id,
                                kind=EntryKind.refund, amount_fen=fen, payment_id=payment_id, created_at=now))
        audit(session, actor=actor, action="refund_requested", subject_type="visit", subject_id=visit_id,
              reason=reason, at=now, refund_id=refund.id, payment_id=payment_id, amount_fen=fen)
        made.append(refund)
    await session.flush()
    return made


async def settle_refund(session: AsyncSession, refund_id: str, to: RefundStatus, *, actor: str,
                        channel_refund_no: str | None = None, detail: str | None = None) -> Refund | None:
    """Record what the channel (or the operator) says about a refund. Repeats change nothing;
    a final refund never changes its outcome. None: no such refund."""
    refund = await session.get(Refund, refund_id, with_for_update=True)
    if refund is None:
        return None
    move = refund_move(RefundStatus(refund.status), to)
    if not move:
        return refund
    now = utcnow()
    refund.status = str(to)
    refund.channel_refund_no = channel_refund_no or refund.channel_refund_no
    refund.detail = detail or refund.detail
    if to is RefundStatus.succeeded:
        refund.completed_at = now
        payment = await session.get(Payment, refund.payment_id, with_for_update=True)
        assert payment is not None
        moved = apply(PaymentState(status=PaymentStatus(payment.status), amount_fen=payment.amount_fen,
                                   refunded_fen=payment.refunded_fen), PaymentEvent.refunded,
                      amount_fen=refund.amount_fen)
        if isinstance(moved, Illegal):  # cannot happen: planning never asks beyond the payment
            raise RuntimeError(f"refund {refund.id}: {moved.detail}")
        payment.status = str(moved.state.status)
        payment.refunded_fen = moved.state.refunded_fen
    elif to is RefundStatus.failed:
        refund.completed_at = now
        session.add(LedgerEntry(idempotency_key=f"refund:{refund.id}:reversal", visit_id=refund.visit_id,
                                patient_id=refund.patient_id, kind=EntryKind.refund_reversal,
                                amount_fen=refund.amount_fen, payment_id=refund.payment_id, created_at=now))
    audit(session, actor=actor, action=f"refund_{to}", subject_type="visit", subject_id=refund.visit_id,
          reason=detail, at=now, refund_id=refund.id, amount_fen=refund.amount_fen)
    await session.flush()
    return refund
