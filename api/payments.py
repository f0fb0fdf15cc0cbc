"""Money landing: window payments and channel payments share one booking path. A payment
is allocated to the chosen unpaid visits oldest first and written to the ledger in the
same transaction; the visits' workflows are told after the commit (and re-read the ledger
before any sanction, so a lost signal cannot lock a paid card)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from activities.refunds import refund_input
from api import schemas as s
from api import services as svc
from api.deps import AppState
from api.errors import ApiError
from db.models import Payment, Refund
from db.payments import Landed, book, channel_paid, unpaid  # noqa: F401 - the API's names for them
from db.repositories import utcnow
from domain.money import format_fen
from integrations.payments.alipay import AlipayError
from integrations.payments.channels import ChannelBusy, ChannelTimeout
from integrations.payments.wechat import WeChatPayError
from workflows import contracts as c
from workflows.insurance import InsurancePaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.visit import VisitWorkflow

log = logging.getLogger("yihoufu.api.payments")


async def tell_workflows(state: AppState, payment_id: str, parts: list[tuple[str, int]]) -> None:
    """Signal every visit the payment touched, all at once."""
    async def tell(visit_id: str, amount: int) -> None:
        try:
            await state.temporal.get_workflow_handle(c.workflow_id(visit_id)).signal(
                VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id=payment_id, amount_fen=amount))
        except RPCError as err:  # a closed visit's workflow has ended; nothing waits for this money
            log.warning("payment %s: could not signal visit %s: %s", payment_id, visit_id, err.message)

    await asyncio.gather(*(tell(v, a) for v, a in parts))


async def start_refunds(state: AppState, refunds: list[Refund]) -> None:
    """After the commit: each refund's workflow (a crash before this is picked up by the
    reconciliation, which starts refunds left waiting)."""
    for refund in refunds:
        try:
            await start_refund(state, refund)
        except RPCError as err:
            log.warning("refund %s: workflow not started (the reconciliation will): %s", refund.id, err.message)


async def start_refund(state: AppState, refund: Refund) -> WorkflowHandle:
    return await state.temporal.start_workflow(
        RefundWorkflow.run, refund_input(refund), id=c.refund_workflow_id(refund.id),
        task_queue=state.settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Refund {format_fen(refund.amount_fen)} · visit {refund.visit_id}")


async def wake_refund(state: AppState, refund_id: str) -> None:
    try:
        await state.temporal.get_workflow_handle(c.refund_workflow_id(refund_id)).signal(RefundWorkflow.refund_updated)
    except RPCError as err:  # finished already, or not started: the reconciliation looks after it
        log.info("refund %s: workflow not told: %s", refund_id, err.message)


async def landed(state: AppState, money: Landed) -> None:
    """After the commit: tell the visits (and the insurance saga a self-pay part belongs to),
    start the refunds."""
    await tell_workflows(state, money.payment.id, money.parts)  # told again on a repeat: harmless
    await start_refunds(state, money.refunds)
    if money.payment.insurance_settlement_id:
        try:
            await state.temporal.get_workflow_handle(
                c.insurance_workflow_id(money.payment.insurance_settlement_id)).signal(
                InsurancePaymentWorkflow.self_pay_received)
        except RPCError as err:  # finished (reversed): the money stays booked as a payment of the bill
            log.info("settlement %s: not told of its self-pay: %s", money.payment.insurance_settlement_id,
                     err.message)


async def open_order(state: AppState, session: AsyncSession, *, patient_id: str, visit_ids: list[str],
                     amount_fen: int, channel: str, client_ip: str | None,
                     insurance_settlement_id: str | None = None) -> s.ChannelPayment:
    """A pending payment and its order at the channel; answers where the patient pays."""
    at = state.channels.get(channel)
    if at is None:
        raise ApiError(409, "channel_unavailable", f"{channel} is not set up at this hospital")
    now = utcnow()
    payment = Payment(id=svc.new_id("pay_"), patient_id=patient_id, method=channel, amount_fen=amount_fen,
                      status="pending", actor="patient", created_at=now, completed_at=None, visit_ids=visit_ids,
                      insurance_settlement_id=insurance_settlement_id)
    session.add(payment)
    try:  # the order is created while this patient's payments are locked: one at a time
        pay_url = await at.open_order(out_trade_no=payment.id, amount_fen=amount_fen,
                                      client_ip=client_ip or "127.0.0.1")
    except ChannelTimeout:
        # the order may exist at the channel: keep the payment as `unknown` (never failed), and
        # let reconciliation ask, land what was paid, and close the rest
        payment.status = "unknown"
        await session.commit()
        raise ApiError(504, "channel_timeout", f"{channel} did not answer; payment {payment.id} is being checked",
                       payment_id=payment.id) from None
    except (ChannelBusy, WeChatPayError, AlipayError) as err:
        raise ApiError(502, "channel_error", f"{channel} refused the order ({err})") from None
    return s.ChannelPayment(payment_id=payment.id, channel=channel, status="pending", amount_fen=amount_fen,
                            visit_ids=visit_ids, pay_url=pay_url, created_at=now)


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
                           headers: dict[str, str]) -> Landed:
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


