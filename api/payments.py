"""Money landing: window payments and channel payments share one booking path. A payment
is allocated to the chosen unpaid visits oldest first and written to the ledger in the
same transaction; the visits' workflows are told after the commit (and re-read the ledger
before any sanction, so a lost signal cannot lock a paid card)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api import schemas as s
from api.deps import AppState
from api.errors import ApiError
from api.metrics import PAYMENTS
from db.models import LedgerEntry, Payment, Visit
from db.repositories import audit, lock_patient, open_visits, utcnow
from domain.bill import OpenBill, Totals, allocate
from domain.payment import Illegal, PaymentEvent, PaymentState, PaymentStatus, apply
from workflows import contracts as c
from workflows.visit import VisitWorkflow

log = logging.getLogger("yihoufu.api.payments")


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
        raise ApiError(404, "visit_not_found", f"no visit {', '.join(sorted(missing))} for this patient")
    return [(v, t) for v, t in bills if v.id in wanted]


def book(session: AsyncSession, payment: Payment, bills: list[tuple[Visit, Totals]]) -> list[tuple[str, int]]:
    """Ledger entries for a payment that landed; they always add up to its amount. Money
    beyond what is owed stays on the newest visit as a credit (refunded by the channel
    refund flow)."""
    parts = allocate(payment.amount_fen, [OpenBill(visit_id=v.id, balance_fen=t.balance_fen) for v, t in bills])
    rest = payment.amount_fen - sum(a for _, a in parts)
    if rest > 0:
        target = bills[-1][0].id if bills else None
        if target is None:
            raise ApiError(409, "nothing_to_pay", "nothing is owed on these visits")
        parts = [(v, a + rest) if v == target else (v, a) for v, a in parts]
        if target not in {v for v, _ in parts}:
            parts.append((target, rest))
    PAYMENTS.labels(payment.method).inc(payment.amount_fen)
    now = utcnow()
    for visit_id, amount in parts:
        session.add(LedgerEntry(idempotency_key=f"{payment.id}:{visit_id}", visit_id=visit_id,
                                patient_id=payment.patient_id, kind="payment", amount_fen=amount,
                                payment_id=payment.id, created_at=now))
    return parts


async def tell_workflows(state: AppState, payment_id: str, parts: list[tuple[str, int]]) -> None:
    for visit_id, amount in parts:
        try:
            await state.temporal.get_workflow_handle(c.workflow_id(visit_id)).signal(
                VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id=payment_id, amount_fen=amount))
        except RPCError as err:  # a settled visit's workflow has ended; nothing waits for this money
            log.warning("payment %s: could not signal visit %s: %s", payment_id, visit_id, err.message)


def out(payment: Payment, parts: list[tuple[str, int]]) -> s.PaymentOut:
    return s.PaymentOut(payment_id=payment.id, patient_id=payment.patient_id, method=payment.method,
                        amount_fen=payment.amount_fen, status=payment.status,
                        allocations=[s.Allocation(visit_id=v, amount_fen=a) for v, a in parts],
                        created_at=payment.created_at)


# --- the sandbox channel ---------------------------------------------------------------


def sandbox_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sandbox_notification(secret: str, payment: Payment) -> tuple[bytes, dict[str, str]]:
    """What the sandbox channel posts to /v1/payments/notify/sandbox when a payment succeeds."""
    body = json.dumps({"payment_id": payment.id, "trade_no": f"SBX{payment.id[-12:].upper()}",
                       "amount_fen": payment.amount_fen, "status": "success"}, separators=(",", ":")).encode()
    return body, {"X-Sandbox-Signature": sandbox_signature(secret, body)}


async def sandbox_notified(state: AppState, session: AsyncSession, body: bytes,
                           headers: dict[str, str]) -> tuple[Payment, list[tuple[str, int]]]:
    """Verify and apply a sandbox-channel notification. A duplicate changes nothing."""
    expected = sandbox_signature(state.settings.sandbox_channel_secret, body)
    if not hmac.compare_digest(expected, headers.get("x-sandbox-signature", "")):
        raise ApiError(401, "invalid_signature", "the notification's signature does not verify")
    try:
        data: dict[str, Any] = json.loads(body)
        payment_id, trade_no, amount = str(data["payment_id"]), str(data["trade_no"]), data["amount_fen"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "invalid_notification", "the notification is not well formed") from None
    if data.get("status") != "success":
        raise ApiError(400, "amount_mismatch", "the notified amount or status does not match the order")
    return await channel_paid(session, channel="sandbox", payment_id=payment_id, amount_fen=amount,
                              trade_no=trade_no)


async def channel_paid(session: AsyncSession, *, channel: str, payment_id: str, amount_fen: object,
                       trade_no: str) -> tuple[Payment, list[tuple[str, int]]]:
    """A verified notification (or query) says the order is paid: land the money once."""
    payment = await session.get(Payment, payment_id, with_for_update=True)
    if payment is None or payment.method != channel:
        raise ApiError(404, "payment_not_found", f"no {channel} payment {payment_id}")
    if isinstance(amount_fen, bool) or amount_fen != payment.amount_fen:
        raise ApiError(400, "amount_mismatch", "the notified amount or status does not match the order")
    moved = apply(PaymentState(status=PaymentStatus(payment.status), amount_fen=payment.amount_fen),
                  PaymentEvent.succeeded)
    if isinstance(moved, Illegal):
        raise ApiError(409, "payment_conflict", moved.detail)
    if not moved.changed:  # told again: the money landed once already
        entries = (await session.scalars(select(LedgerEntry).where(LedgerEntry.payment_id == payment.id))).all()
        return payment, [(e.visit_id, e.amount_fen) for e in entries]
    bills = await unpaid(session, payment.patient_id, payment.visit_ids)
    payment.status = str(moved.state.status)
    payment.completed_at = utcnow()
    payment.channel_trade_no = trade_no
    parts = book(session, payment, bills or await _any_visit(session, payment))
    audit(session, actor=f"channel:{channel}", action="payment_succeeded", subject_type="patient",
          subject_id=payment.patient_id, payment_id=payment.id, amount_fen=payment.amount_fen, trade_no=trade_no)
    return payment, parts


async def _any_visit(session: AsyncSession, payment: Payment) -> list[tuple[Visit, Totals]]:
    """Paid twice, or paid after the bill was settled another way: the money still lands (as a credit)."""
    ids = payment.visit_ids or []
    visits = (await session.scalars(select(Visit).where(Visit.id.in_(ids)))).all()
    return [(v, Totals(total_fen=0, paid_fen=0, balance_fen=0)) for v in visits]
