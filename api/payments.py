"""Payments at the API: window payments, orders at a channel, a patient's payment, and the
sandbox channel's notifications. The money itself is the ledger's (ledger/payments.py); after
the request's commit, ledger.handoff tells the visits and starts the refunds."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api import schemas as s, services as svc
from api.deps import AppState, commit_before_call
from api.errors import ApiError
from api.metrics import PAYMENTS
from api.patients import get_patient
from db.models import Patient, Payment, Refund
from domain.payment import WAITING, PaymentProgress
from integrations.payments.channels import ChannelError, ChannelTimeout, Paid
from ledger import payments as money, repository as ledger_repo
from ledger.errors import NothingToPay, PaymentNotFound
from ledger.handoff import Handoff
from ledger.payments import Landed, channel_paid as channel_paid  # `as`: the notify route's name for it

log = logging.getLogger("yihoufu.api.payments")


def handoff(state: AppState) -> Handoff:
    return Handoff(state.temporal, state.factory, state.settings.task_queue)


async def landed(state: AppState, landed: Landed) -> None:
    """After the commit: tell the visits (and an insurance saga), start the refunds."""
    await handoff(state).landed(landed)


async def wake_refund(state: AppState, refund_id: str) -> None:
    await handoff(state).wake_refund(refund_id)


async def start_refunds(state: AppState, refunds: list[Refund]) -> None:
    await handoff(state).start_refunds(refunds)


async def channel_notified(state: AppState, session: AsyncSession, channel: str, told: Paid) -> None:
    """A channel's verified notification that an order is paid: the money lands once (a
    repeat changes nothing), then, after the commit, the visits are told."""
    paid = await channel_paid(
        session, channel=channel, payment_id=told.out_trade_no, amount_fen=told.amount_fen, trade_no=told.transaction_id
    )
    await commit_before_call(session)
    await landed(state, paid)


def out(payment: Payment, parts: list[tuple[str, int]]) -> s.PaymentOut:
    return s.PaymentOut(
        payment_id=payment.id,
        patient_id=payment.patient_id,
        method=payment.method,
        amount_fen=payment.amount_fen,
        status=str(payment.status),
        allocations=[s.Allocation(visit_id=v, amount_fen=a) for v, a in parts],
        created_at=payment.created_at,
    )


async def window_payment(
    state: AppState, session: AsyncSession, body: s.OpsPaymentIn, *, actor: str, idempotency_key: str | None
) -> JSONResponse:
    """Money taken at the window, allocated to the patient's unpaid visits oldest first."""
    request_hash = svc.body_hash(body)
    key = f"ops-payment:{idempotency_key}" if idempotency_key else None
    patient = await get_patient(session, body.patient_id)
    bills = await money.unpaid(session, patient.id, body.visit_ids)  # takes the patient lock
    # looked up under the lock, so a concurrent retry with the same key sees the first one's answer
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        if payment_id := stored.response.get("payment_id"):
            await commit_before_call(session)
            # a retry tells the visits again
            await handoff(state).tell_visits(payment_id, settled_within=state.settings.payment_settled_wait)
        return JSONResponse(stored.response, status_code=stored.status_code)
    paid = await money.take_window_payment(
        session, bills, patient_id=patient.id, method=body.method, amount_fen=body.amount_fen, actor=actor
    )
    PAYMENTS.labels(paid.payment.method).inc(paid.payment.amount_fen)
    data = out(paid.payment, paid.parts).model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 201, data)
    await commit_before_call(session)
    await handoff(state).tell_visits(paid.payment.id, settled_within=state.settings.payment_settled_wait)
    return JSONResponse(data, status_code=201)


async def open_order(
    state: AppState,
    session: AsyncSession,
    *,
    patient_id: str,
    visit_ids: list[str],
    amount_fen: int,
    channel: str,
    client_ip: str | None,
    insurance_settlement_id: str | None = None,
) -> s.ChannelPayment:
    """A pending payment and its order at the channel; answers where the patient pays."""
    at = state.channels.get(channel)
    if at is None:
        raise ApiError(409, "channel_unavailable", f"{channel} is not set up at this hospital")
    payment = money.open_channel_payment(
        session,
        patient_id=patient_id,
        visit_ids=visit_ids,
        amount_fen=amount_fen,
        channel=channel,
        insurance_settlement_id=insurance_settlement_id,
    )
    try:  # the order is created while this patient's payments are locked: one at a time
        pay_url = await at.open_order(
            out_trade_no=payment.id, amount_fen=amount_fen, client_ip=client_ip or "127.0.0.1"
        )
    except ChannelTimeout:
        money.payment_unknown(payment)  # kept, though the request fails: the reconciliation asks
        raise ApiError(
            504,
            "channel_timeout",
            f"{channel} did not answer; payment {payment.id} is being checked",
            keeps_writes=True,
            payment_id=payment.id,
        ) from None
    except ChannelError as err:
        raise ApiError(502, "channel_error", f"{channel} refused the order ({err})") from None
    return s.ChannelPayment(
        payment_id=payment.id,
        channel=channel,
        status=str(PaymentProgress.pending),
        amount_fen=amount_fen,
        visit_ids=visit_ids,
        pay_url=pay_url,
        created_at=payment.created_at,
    )


async def patient_pay(
    state: AppState,
    session: AsyncSession,
    patient: Patient,
    body: s.PatientPaymentIn,
    *,
    client_ip: str | None,
    idempotency_key: str | None,
) -> JSONResponse:
    """Start paying the merged bill (or chosen visits) at a channel."""
    request_hash = svc.body_hash(body)
    key = f"patient-payment:{patient.id}:{idempotency_key}" if idempotency_key else None
    bills = await money.unpaid(session, patient.id, body.visit_ids)
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    owed = money.owed(bills)
    if owed <= 0:
        raise NothingToPay("nothing is owed on these visits")
    order = await open_order(
        state,
        session,
        patient_id=patient.id,
        visit_ids=[v.id for v, _ in bills],
        amount_fen=owed,
        channel=body.channel,
        client_ip=client_ip,
    )
    data = order.model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 201, data)
    return JSONResponse(data, status_code=201)


async def payment_status(session: AsyncSession, patient: Patient, payment_id: str) -> s.PatientPaymentStatus:
    """One of the patient's payments (another patient's does not exist for them)."""
    row = await session.get(Payment, payment_id)
    if row is None or row.patient_id != patient.id:
        raise PaymentNotFound(f"no payment {payment_id}")
    return s.PatientPaymentStatus(
        payment_id=row.id,
        status=row.status,
        final=row.status not in WAITING,
        amount_fen=row.amount_fen,
        channel=row.method,
        visit_ids=list(row.visit_ids or []),
        refunded_fen=row.refunded_fen,
        allocations=[
            s.Allocation(visit_id=v, amount_fen=a) for v, a in await ledger_repo.payment_parts(session, row.id)
        ],
        created_at=row.created_at,
        completed_at=row.completed_at,
    )


# --- the sandbox channel ---------------------------------------------------------------
