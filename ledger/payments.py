"""Money landing: window payments, channel payments and the insurance parts share one
booking path. A payment is allocated to the chosen unpaid visits oldest first and written to
the ledger in the caller's transaction, once: a repeat finds the payment already moved and
books nothing. The same transaction writes the visits' notifications (the outbox), which
ledger.handoff delivers after the commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry, Payment, Refund, Visit
from db.repositories import audit, lock_patient, open_visits, utcnow
from domain.bill import EntryKind, OpenBill, Totals, allocate
from domain.payment import Illegal, PaymentEvent, PaymentProgress, PaymentState, apply
from ledger import repository as repo
from ledger.errors import (
    AmountExceedsBalance,
    AmountMismatch,
    NothingToPay,
    PaymentConflict,
    PaymentNotFound,
    VisitNotFound,
)
from ledger.refunds import refund_credit

Bills = list[tuple[Visit, Totals]]


@dataclass
class Landed:
    payment: Payment
    parts: list[tuple[str, int]]  # (visit_id, fen): the payment's allocations
    refunds: list[Refund] = field(default_factory=list)  # money beyond the bill, on its way back
    new: bool = True  # False: told again, nothing booked this time


async def unpaid(session: AsyncSession, patient_id: str, visit_ids: Sequence[str] | None) -> Bills:
    """The patient's visits that owe money, oldest first, under the patient's lock (one payment
    at a time per patient); only `visit_ids` when given (a visit not this patient's: VisitNotFound)."""
    await lock_patient(session, patient_id)
    bills = await open_visits(session, patient_id)
    if visit_ids is None:
        return bills
    wanted = set(visit_ids)
    known = {v.id for v in await repo.visits_of(session, list(wanted), patient_id)}
    if missing := wanted - known:
        raise VisitNotFound(f"no visit {', '.join(sorted(missing))} for this patient")
    return [(v, t) for v, t in bills if v.id in wanted]


def owed(bills: Bills) -> int:
    return sum(t.balance_fen for _, t in bills)


def book(session: AsyncSession, payment: Payment, bills: Bills) -> list[tuple[str, int]]:
    """Ledger entries for a payment that landed, and the notifications of its visits (the
    outbox); the entries always add up to its amount. Money beyond what is owed lands on the
    newest visit as a credit, which the caller refunds."""
    parts = allocate(payment.amount_fen, [OpenBill(visit_id=v.id, balance_fen=t.balance_fen) for v, t in bills])
    rest = payment.amount_fen - sum(a for _, a in parts)
    if rest > 0:
        if not bills:
            raise NothingToPay("nothing is owed on these visits")
        target = bills[-1][0].id
        parts = [(v, a + rest) if v == target else (v, a) for v, a in parts]
        if target not in {v for v, _ in parts}:
            parts.append((target, rest))
    now = utcnow()
    for visit_id, amount in parts:
        repo.add_entry(
            session,
            LedgerEntry(
                idempotency_key=f"{payment.id}:{visit_id}",
                visit_id=visit_id,
                patient_id=payment.patient_id,
                kind=EntryKind.payment,
                amount_fen=amount,
                payment_id=payment.id,
                created_at=now,
            ),
        )
    repo.notify_visits(session, payment.id, parts)  # the visits are told, however long Temporal is away
    return parts


async def take_window_payment(
    session: AsyncSession, bills: Bills, *, patient_id: str, method: str, amount_fen: int, actor: str
) -> Landed:
    """Money taken at the window, on `bills` (from `unpaid`, so under the patient's lock)."""
    due = owed(bills)
    if due == 0:
        raise NothingToPay("nothing is owed on these visits")
    if amount_fen > due:
        raise AmountExceedsBalance(f"{amount_fen} fen is more than the {due} fen owed", balance_fen=due)
    now = utcnow()
    payment = await repo.add_payment(
        session,
        Payment(
            id=repo.new_id("pay_"),
            patient_id=patient_id,
            method=method,
            amount_fen=amount_fen,
            status=PaymentProgress.succeeded,
            actor=actor,
            created_at=now,
            completed_at=now,
        ),
    )
    parts = book(session, payment, bills)
    audit(
        session,
        actor=actor,
        action="window_payment",
        subject_type="patient",
        subject_id=patient_id,
        at=now,
        payment_id=payment.id,
        amount_fen=amount_fen,
        method=method,
    )
    return Landed(payment=payment, parts=parts)


def open_channel_payment(
    session: AsyncSession,
    *,
    patient_id: str,
    visit_ids: list[str],
    amount_fen: int,
    channel: str,
    insurance_settlement_id: str | None = None,
) -> Payment:
    """A pending payment, before its order at the channel: allocated when the money lands."""
    payment = Payment(
        id=repo.new_id("pay_"),
        patient_id=patient_id,
        method=channel,
        amount_fen=amount_fen,
        status=PaymentProgress.pending,
        actor="patient",
        created_at=utcnow(),
        completed_at=None,
        visit_ids=visit_ids,
        insurance_settlement_id=insurance_settlement_id,
    )
    session.add(payment)
    return payment


def payment_unknown(payment: Payment) -> None:
    """The channel did not answer: the order may exist, so the payment is never failed here;
    the reconciliation asks, lands what was paid and closes the rest."""
    payment.status = PaymentProgress.unknown


async def any_visit(session: AsyncSession, payment: Payment) -> Bills:
    """Paid twice, or paid after the bill was settled another way: the money still lands (as a credit)."""
    visits = await repo.visits_of(session, list(payment.visit_ids or []))
    return [(v, Totals(total_fen=0, paid_fen=0, balance_fen=0)) for v in visits]


async def _refund_beyond(session: AsyncSession, landed: Landed, actor: str) -> None:
    """Ask back at once whatever the payment put beyond the bill (paid twice, or the bill shrank)."""
    for visit_id, _ in landed.parts:
        landed.refunds += await refund_credit(
            session, visit_id=visit_id, patient_id=landed.payment.patient_id, reason="overpayment", actor=actor
        )


async def channel_paid(
    session: AsyncSession, *, channel: str, payment_id: str, amount_fen: object, trade_no: str
) -> Landed:
    """A verified notification (or query) says the order is paid: land the money once, and
    ask back at once whatever it paid beyond the bill."""
    payment = await repo.payment_for_update(session, payment_id)
    if payment is None or payment.method != channel:
        raise PaymentNotFound(f"no {channel} payment {payment_id}")
    if isinstance(amount_fen, bool) or amount_fen != payment.amount_fen:
        raise AmountMismatch("the notified amount or status does not match the order")
    moved = apply(
        PaymentState(status=PaymentProgress(payment.status), amount_fen=payment.amount_fen), PaymentEvent.succeeded
    )
    if isinstance(moved, Illegal):
        raise PaymentConflict(moved.detail)
    if not moved.changed:  # told again: the money landed once already
        return Landed(payment=payment, parts=await repo.payment_parts(session, payment.id), new=False)
    bills = await unpaid(session, payment.patient_id, payment.visit_ids)
    payment.status = str(moved.state.status)
    payment.completed_at = utcnow()
    payment.channel_trade_no = trade_no
    landed = Landed(payment=payment, parts=book(session, payment, bills or await any_visit(session, payment)))
    audit(
        session,
        actor=f"channel:{channel}",
        action="payment_succeeded",
        subject_type="patient",
        subject_id=payment.patient_id,
        payment_id=payment.id,
        amount_fen=payment.amount_fen,
        trade_no=trade_no,
    )
    await _refund_beyond(session, landed, f"channel:{channel}")
    return landed


async def payment_failed(session: AsyncSession, payment_id: str, *, actor: str, reason: str) -> Payment | None:
    """The order was closed unpaid: the payment is failed for good (a paid one stays paid)."""
    payment = await repo.payment_for_update(session, payment_id)
    if payment is None:
        return None
    moved = apply(
        PaymentState(
            status=PaymentProgress(payment.status), amount_fen=payment.amount_fen, refunded_fen=payment.refunded_fen
        ),
        PaymentEvent.failed,
    )
    if isinstance(moved, Illegal) or not moved.changed:
        return payment
    payment.status = str(moved.state.status)
    payment.completed_at = utcnow()
    audit(
        session,
        actor=actor,
        action="payment_failed",
        subject_type="patient",
        subject_id=payment.patient_id,
        reason=reason,
        payment_id=payment.id,
        amount_fen=payment.amount_fen,
    )
    return payment


async def land_insurance_part(
    session: AsyncSession,
    *,
    settlement_id: str,
    part: str,
    patient_id: str,
    visit_ids: list[str],
    amount_fen: int,
    bureau_settlement_no: str | None,
    method: str = "",
) -> Landed:
    """The bureau settled the insurance part (`pooled` or `personal`) of a settlement: it
    lands as a payment of its own, and whatever it put beyond the bill goes back. `method`:
    another than `insurance_{part}` (医保移动支付's cash part, paid at the platform: `nhsa_mobile`)."""
    now = utcnow()
    payment = await repo.add_payment(
        session,
        Payment(
            id=f"{settlement_id}-{part}",
            patient_id=patient_id,
            method=method or f"insurance_{part}",
            amount_fen=amount_fen,
            status=PaymentProgress.succeeded,
            actor="insurance",
            created_at=now,
            completed_at=now,
            visit_ids=visit_ids,
            insurance_settlement_id=settlement_id,
            channel_trade_no=bureau_settlement_no,
        ),
    )
    bills = await unpaid(session, patient_id, visit_ids)
    landed = Landed(payment=payment, parts=book(session, payment, bills or await any_visit(session, payment)))
    await _refund_beyond(session, landed, "insurance")
    return landed
