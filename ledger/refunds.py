"""Refunds: a visit whose ledger shows a credit (negative balance) gives it back to the
payments that made it, newest first: one `refund` row and one `refund` entry per payment, in
the caller's transaction, under the patient's lock. The entry is booked when the refund is
asked for, so the same credit is never returned twice; when the channel refuses for good, a
`refund_reversal` entry puts the credit back and operators see the refund as failed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry, Payment, Refund, Visit
from db.repositories import audit, lock_patient, utcnow, visit_totals
from domain.bill import EntryKind, Refundable, plan_refunds
from domain.payment import Illegal, PaymentEvent, PaymentProgress, PaymentState, RefundStatus, apply, refund_move
from ledger import repository as repo
from ledger.errors import AmountMismatch, NoCredit, RefundNotFound, RefundNotManual, VisitNotFound
from workflows import contracts as c

# Money that goes back by hand: handed over at the window; an operator confirms each one.
WINDOW_METHODS = ("cash", "card", "insurance")
# Money that goes back through the bureau (activities/insurance_refunds.py): the insurance parts
# of a card-less settlement (2208, when the whole insurance part is asked back, else by hand), and
# every part of a 医保移动支付 order, its cash part (`nhsa_mobile`) included (6203).
BUREAU_METHODS = ("insurance_pooled", "insurance_personal", "nhsa_mobile")


def refund_input(refund: Refund) -> c.RefundInput:
    """The refund's workflow payload (ids and amounts only)."""
    return c.RefundInput(
        refund_id=refund.id,
        patient_id=refund.patient_id,
        visit_id=refund.visit_id,
        payment_id=refund.payment_id,
        method=refund.method,
        amount_fen=refund.amount_fen,
    )


async def _refundable(session: AsyncSession, visit_id: str) -> list[Refundable]:
    """Per payment on this visit, newest first: what it put on the visit less what already
    went back (refunds asked for, less refunds refused), capped by the payment's own rest."""
    net: dict[str, int] = {}
    newest: dict[str, int] = {}
    sign = {EntryKind.payment: 1, EntryKind.refund: -1, EntryKind.refund_reversal: 1}
    for payment_id, kind, total, last_id in await repo.net_by_payment(session, visit_id):
        if EntryKind(kind) in sign:
            net[payment_id] = net.get(payment_id, 0) + sign[EntryKind(kind)] * total
            newest[payment_id] = max(newest.get(payment_id, 0), last_id)
    out = []
    for payment_id in sorted(net, key=lambda p: newest[p], reverse=True):
        payment = await session.get(Payment, payment_id)
        if payment is None:
            continue
        rest = payment.amount_fen - await repo.refunds_asked(session, payment_id)
        out.append(Refundable(payment_id=payment_id, fen=min(net[payment_id], rest)))
    return out


async def refund_credit(
    session: AsyncSession, *, visit_id: str, patient_id: str, reason: str, actor: str
) -> list[Refund]:
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
        refund = await repo.add_refund(
            session,
            Refund(
                id=repo.new_id("rfd_", 12),
                payment_id=payment_id,
                patient_id=patient_id,
                visit_id=visit_id,
                method=payment.method,
                amount_fen=fen,
                reason=reason,
                status=RefundStatus.created,
                created_at=now,
            ),
            at=now,
        )
        audit(
            session,
            actor=actor,
            action="refund_requested",
            subject_type="visit",
            subject_id=visit_id,
            reason=reason,
            at=now,
            refund_id=refund.id,
            payment_id=payment_id,
            amount_fen=fen,
        )
        made.append(refund)
    await session.flush()
    return made


async def refund_visit_credit(session: AsyncSession, visit_id: str, *, reason: str, actor: str) -> list[Refund]:
    """An operator returns a visit's credit now (after a refused refund, or money that arrived
    after the visit closed). Refused when it has none."""
    visit = await session.get(Visit, visit_id)
    if visit is None:
        raise VisitNotFound(f"no visit {visit_id}")
    refunds = await refund_credit(session, visit_id=visit_id, patient_id=visit.patient_id, reason=reason, actor=actor)
    if not refunds:
        raise NoCredit(f"visit {visit_id} has no credit to refund")
    return refunds


async def _refunded(session: AsyncSession, refund: Refund) -> None:
    """The money went back: the payment carries it (partially or fully refunded)."""
    payment = await session.get(Payment, refund.payment_id, with_for_update=True)
    assert payment is not None
    moved = apply(
        PaymentState(
            status=PaymentProgress(payment.status), amount_fen=payment.amount_fen, refunded_fen=payment.refunded_fen
        ),
        PaymentEvent.refunded,
        amount_fen=refund.amount_fen,
    )
    if isinstance(moved, Illegal):  # cannot happen: planning never asks beyond the payment
        raise RuntimeError(f"refund {refund.id}: {moved.detail}")
    payment.status = str(moved.state.status)
    payment.refunded_fen = moved.state.refunded_fen


def _refused(session: AsyncSession, refund: Refund, at: datetime) -> None:
    """Refused for good: the credit is back on the visit."""
    repo.add_entry(
        session,
        LedgerEntry(
            idempotency_key=f"refund:{refund.id}:reversal",
            visit_id=refund.visit_id,
            patient_id=refund.patient_id,
            kind=EntryKind.refund_reversal,
            amount_fen=refund.amount_fen,
            payment_id=refund.payment_id,
            created_at=at,
        ),
    )


async def settle_refund(
    session: AsyncSession,
    refund_id: str,
    to: RefundStatus,
    *,
    actor: str,
    channel_refund_no: str | None = None,
    detail: str | None = None,
) -> Refund | None:
    """Record what the channel (or the operator) says about a refund. Repeats change nothing;
    a final refund never changes its outcome. None: no such refund."""
    refund = await repo.refund_for_update(session, refund_id)
    if refund is None:
        return None
    if not refund_move(RefundStatus(refund.status), to):
        return refund
    now = utcnow()
    refund.status = str(to)
    refund.channel_refund_no = channel_refund_no or refund.channel_refund_no
    refund.detail = detail or refund.detail
    if to in (RefundStatus.succeeded, RefundStatus.failed):
        refund.completed_at = now
    if to is RefundStatus.succeeded:
        await _refunded(session, refund)
    elif to is RefundStatus.failed:
        _refused(session, refund, now)
    audit(
        session,
        actor=actor,
        action=f"refund_{to}",
        subject_type="visit",
        subject_id=refund.visit_id,
        reason=detail,
        at=now,
        refund_id=refund.id,
        amount_fen=refund.amount_fen,
    )
    await session.flush()
    return refund


async def complete_window_refund(session: AsyncSession, refund_id: str, *, actor: str) -> Refund:
    """The money of a window refund was handed back: an operator confirms it (a repeat is harmless)."""
    refund = await session.get(Refund, refund_id)
    if refund is None:
        raise RefundNotFound(f"no refund {refund_id}")
    if refund.status not in (RefundStatus.manual, RefundStatus.succeeded):
        raise RefundNotManual(f"refund {refund_id} is {refund.status}: the channel returns it")
    settled = await settle_refund(
        session, refund_id, RefundStatus.succeeded, actor=actor, detail="handed back at the window"
    )
    assert settled is not None
    return settled


async def channel_refund_told(
    session: AsyncSession,
    *,
    channel: str,
    refund_id: str,
    amount_fen: int,
    status: RefundStatus,
    channel_refund_no: str | None,
    detail: str | None,
) -> Refund:
    """A channel's verified refund result: recorded once (repeats change nothing)."""
    refund = await session.get(Refund, refund_id)
    if refund is None or refund.method != channel:
        raise RefundNotFound(f"no {channel} refund {refund_id}")
    if amount_fen != refund.amount_fen:
        raise AmountMismatch("the notified refund amount does not match ours")
    settled = await settle_refund(
        session, refund.id, status, actor=f"channel:{channel}", channel_refund_no=channel_refund_no, detail=detail
    )
    assert settled is not None
    return settled
