"""Money landing, shared by the API (window payments, channel notifications) and the
reconciliation activities (a channel's query found money whose notification never came).
A payment is allocated to the chosen unpaid visits oldest first and written to the ledger in
the caller's transaction, once: a repeat finds the payment already moved and books nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry, Payment, Refund, Visit
from db.refunds import refund_credit
from db.repositories import audit, lock_patient, open_visits, utcnow
from domain.bill import OpenBill, Totals, allocate
from domain.payment import Illegal, PaymentEvent, PaymentState, PaymentStatus, apply


class PaymentProblem(Exception):
    """A business refusal with an HTTP status and a stable code (the API answers problem+json)."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


async def unpaid(session: AsyncSession, patient_id: str, visit_ids: list[str] | None) -> list[tuple[Visit, Totals]]:
    """The patient's visits that owe money, oldest first; only `visit_ids` when given
    (404 for a visit that is not this patient's)."""
    await lock_patient(session, patient_id)  # one payment at a time per patient
    bills = await open_visits(session, patient_id)
    if visit_ids is None:
        return bills
    wanted = set(visit_ids)
    known = set((await session.scalars(select(Visit.id).where(
        Visit.id.in_(wanted), Visit.patient_id == patient_id))).all())
    if missing := wanted - known:
        raise PaymentProblem(404, "visit_not_found", f"no visit {', '.join(sorted(missing))} for this patient")
    return [(v, t) for v, t in bills if v.id in wanted]


@dataclass
class Landed:
    payment: Payment
    parts: list[tuple[str, int]]  # (visit_id, fen): the payment's allocations
    refunds: list[Refund] = field(default_factory=list)  # money beyond the bill, on its way back
    new: bool = True  # False: told again, nothing booked this time


def book(session: AsyncSession, payment: Payment, bills: list[tuple[Visit, Totals]]) -> list[tuple[str, int]]:
    """Ledger entries for a payment that landed; they always add up to its amount. Money
    beyond what is owed lands on the newest visit as a credit, which the caller refunds."""
    parts = allocate(payment.amount_fen, [OpenBill(visit_id=v.id, balance_fen=t.balance_fen) for v, t in bills])
    rest = payment.amount_fen - sum(a for _, a in parts)
    if rest > 0:
        target = bills[-1][0].id if bills else None
        if target is None:
            raise PaymentProblem(409, "nothing_to_pay", "nothing is owed on these visits")
        parts = [(v, a + rest) if v == target else (v, a) for v, a in parts]
        if target not in {v for v, _ in parts}:
            parts.append((target, rest))
    now = utcnow()
    for visit_id, amount in parts:
        session.add(LedgerEntry(idempotency_key=f"{payment.id}:{visit_id}", visit_id=visit_id,
                                patient_id=payment.patient_id, kind="payment", amount_fen=amount,
                                payment_id=payment.id, created_at=now))
    return parts


async def channel_paid(session: AsyncSession, *, channel: str, payment_id: str, amount_fen: object,
                       trade_no: str) -> Landed:
    """A verified notification (or query) says the order is paid: land the money once, and
    ask back at once whatever it paid beyond the bill (paid twice, or the bill shrank)."""
    payment = await session.get(Payment, payment_id, with_for_update=True)
    if payment is None or payment.method != channel:
        raise PaymentProblem(404, "payment_not_found", f"no {channel} payment {payment_id}")
    if isinstance(amount_fen, bool) or amount_fen != payment.amount_fen:
        raise PaymentProblem(400, "amount_mismatch", "the notified amount or status does not match the order")
    moved = apply(PaymentState(status=PaymentStatus(payment.status), amount_fen=payment.amount_fen),
                  PaymentEvent.succeeded)
    if isinstance(moved, Illegal):
        raise PaymentProblem(409, "payment_conflict", moved.detail)
    if not moved.changed:  # told again: the money landed once already
        entries = (await session.scalars(select(LedgerEntry).where(
            LedgerEntry.payment_id == payment.id, LedgerEntry.kind == "payment"))).all()
        return Landed(payment=payment, parts=[(e.visit_id, e.amount_fen) for e in entries], new=False)
    bills = await unpaid(session, payment.patient_id, payment.visit_ids)
    payment.status = str(moved.state.status)
    payment.completed_at = utcnow()
    payment.channel_trade_no = trade_no
    parts = book(session, payment, bills or await any_visit(session, payment))
    audit(session, actor=f"channel:{channel}", action="payment_succeeded", subject_type="patient",
          subject_id=payment.patient_id, payment_id=payment.id, amount_fen=payment.amount_fen, trade_no=trade_no)
    refunds = []
    for visit_id, _ in parts:
        refunds += await refund_credit(session, visit_id=visit_id, patient_id=payment.patient_id,
                                       reason="overpayment", actor=f"channel:{channel}")
    return Landed(payment=payment, parts=parts, refunds=refunds)


async def any_visit(session: AsyncSession, payment: Payment) -> list[tuple[Visit, Totals]]:
    """Paid twice, or paid after the bill was settled another way: the money still lands (as a credit)."""
    ids = payment.visit_ids or []
    visits = (await session.scalars(select(Visit).where(Visit.id.in_(ids)))).all()
    return [(v, Totals(total_fen=0, paid_fen=0, balance_fen=0)) for v in visits]


async def payment_failed(session: AsyncSession, payment_id: str, *, actor: str, reason: str) -> Payment | None:
    """The order was closed unpaid: the payment is failed for good (a paid one stays paid)."""
    payment = await session.get(Payment, payment_id, with_for_update=True)
    if payment is None:
        return None
    moved = apply(PaymentState(status=PaymentStatus(payment.status), amount_fen=payment.amount_fen,
                               refunded_fen=payment.refunded_fen), PaymentEvent.failed)
    if isinstance(moved, Illegal) or not moved.changed:
        return payment
    payment.status = str(moved.state.status)
    payment.completed_at = utcnow()
    audit(session, actor=actor, action="payment_failed", subject_type="patient", subject_id=payment.patient_id,
          reason=reason, payment_id=payment.id, amount_fen=payment.amount_fen)
    return payment
