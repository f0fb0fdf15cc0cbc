"""Refunds: ask the channel to send money back, and find out whether it went.

Every call to a channel carries the refund's id as the channel's own refund number
(WeChat `out_refund_no`, Alipay `out_request_no`), so a retried call is the same refund.
A window payment (cash, card, insurance) is handed back by an operator, who confirms it; the
insurance parts of a card-less settlement go back through the bureau (activities/insurance_refunds.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.insurance_refunds import InsuranceRefunds
from db.models import Payment, Refund
from db.repositories import utcnow
from domain.payment import REFUND_NOT_AT_CHANNEL, RefundStatus
from integrations.payments.channels import Channel, RefundAnswer
from ledger.refunds import BUREAU_METHODS, WINDOW_METHODS, refund_credit, refund_input, settle_refund
from workflows import contracts as c


class RefundActivities:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        channels: Mapping[str, Channel],
        *,
        insurance: InsuranceRefunds,
    ) -> None:
        self._factory = factory
        self._channels = channels
        self._insurance = insurance

    @activity.defn(name=c.REFUND_CREDIT)
    async def refund_credit(self, inp: c.RefundCreditInput) -> c.RefundCreditResult:
        async with self._factory() as session, session.begin():
            refunds = await refund_credit(
                session, visit_id=inp.visit_id, patient_id=inp.patient_id, reason=inp.reason, actor="workflow"
            )
            return c.RefundCreditResult(refunds=[refund_input(r) for r in refunds])

    async def _load(self, refund_id: str) -> tuple[Refund, Payment]:
        async with self._factory() as session:
            refund = await session.get(Refund, refund_id)
            payment = None if refund is None else await session.get(Payment, refund.payment_id)
        if refund is None or payment is None:
            raise ApplicationError(
                f"refund {refund_id} is not in the database", type="invalid_input", non_retryable=True
            )
        return refund, payment

    def _channel(self, refund: Refund) -> Channel:
        channel = self._channels.get(refund.method)
        if channel is None:  # retried: the channel may be configured again
            raise ApplicationError(f"channel {refund.method} is not configured here", type="channel_unavailable")
        return channel

    async def _record(
        self, refund_id: str, to: RefundStatus, *, actor: str, channel_refund_no: str = "", detail: str = ""
    ) -> c.RefundStatusResult:
        async with self._factory() as session, session.begin():
            refund = await settle_refund(
                session, refund_id, to, actor=actor, channel_refund_no=channel_refund_no or None, detail=detail or None
            )
            assert refund is not None
            return c.RefundStatusResult(refund_id=refund_id, status=refund.status, detail=refund.detail or "")

    async def _answer(self, refund: Refund, answer: RefundAnswer) -> c.RefundStatusResult:
        if answer.status == RefundStatus.succeeded and answer.amount_fen not in (refund.amount_fen, -1):
            raise ApplicationError(
                f"the channel refunded {answer.amount_fen} fen for a {refund.amount_fen} fen refund: reconcile by hand",
                type="refund_mismatch",
                non_retryable=True,
            )
        return await self._record(
            refund.id,
            RefundStatus(answer.status),
            actor=f"channel:{refund.method}",
            channel_refund_no=answer.channel_refund_no,
            detail=answer.detail,
        )

    @activity.defn(name=c.SUBMIT_REFUND)
    async def submit_refund(self, inp: c.RefundInput) -> c.RefundStatusResult:
        refund, payment = await self._load(inp.refund_id)
        if refund.status in REFUND_NOT_AT_CHANNEL:  # decided, or in an operator's hands
            return c.RefundStatusResult(refund_id=refund.id, status=refund.status, detail=refund.detail or "")
        if refund.method in BUREAU_METHODS:  # the insurance parts: the bureau (2208) or by hand
            return await self._insurance.submit(refund, payment)
        if refund.method in WINDOW_METHODS:
            return await self._record(
                refund.id,
                RefundStatus.manual,
                actor="workflow",
                detail="paid at the window: hand the money back and confirm",
            )
        answer = await self._channel(refund).refund(
            out_refund_no=refund.id, out_trade_no=payment.id, refund_fen=refund.amount_fen, total_fen=payment.amount_fen
        )
        return await self._answer(refund, answer)  # ChannelBusy propagates: asked again later

    @activity.defn(name=c.CHECK_REFUND)
    async def check_refund(self, inp: c.RefundInput) -> c.RefundStatusResult:
        refund, payment = await self._load(inp.refund_id)
        if refund.status in REFUND_NOT_AT_CHANNEL:  # decided, or in an operator's hands
            return c.RefundStatusResult(refund_id=refund.id, status=refund.status, detail=refund.detail or "")
        if refund.method not in (*WINDOW_METHODS, *BUREAU_METHODS):
            answer = await self._channel(refund).query_refund(out_refund_no=refund.id, out_trade_no=payment.id)
            if answer is not None:
                return await self._answer(refund, answer)
        return await self.submit_refund(inp)  # never reached the channel: send it (again; same number)

    @activity.defn(name=c.FIND_STALE_REFUNDS)
    async def find_stale_refunds(self, inp: c.ReconcileInput) -> c.StaleRefundsResult:
        """Refunds not yet final whose workflow may never have started (a crash between the
        commit and the start): the reconciliation starts them; a running one is left alone."""
        cutoff = utcnow() - timedelta(seconds=inp.older_than_seconds)
        async with self._factory() as session:
            rows = (
                await session.scalars(
                    select(Refund)
                    .where(
                        Refund.status.in_([RefundStatus.created, RefundStatus.processing]), Refund.created_at < cutoff
                    )
                    .order_by(Refund.created_at)
                    .limit(500)
                )
            ).all()
            return c.StaleRefundsResult(refunds=[refund_input(r) for r in rows])
