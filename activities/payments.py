"""Reconciliation: ask the channels about payments that stayed pending or unknown (their
notification never came, or our call timed out) and land the money they report."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from db.models import LedgerEntry, Payment
from db.payments import channel_paid
from db.repositories import utcnow
from integrations.payments.wechat import WeChatPayClient, WeChatPayError
from workflows import contracts as c

QUERYABLE = ("wechat",)


class PaymentActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], wechat: WeChatPayClient | None) -> None:
        self._factory = factory
        self._wechat = wechat

    @activity.defn(name=c.FIND_STALE_PAYMENTS)
    async def find_stale_payments(self, inp: c.ReconcileInput) -> c.StalePaymentsResult:
        cutoff = utcnow() - timedelta(seconds=inp.older_than_seconds)
        async with self._factory() as session:
            ids = (await session.scalars(select(Payment.id).where(
                Payment.status.in_(["pending", "unknown"]), Payment.method.in_(QUERYABLE),
                Payment.created_at < cutoff).order_by(Payment.created_at).limit(500))).all()
        return c.StalePaymentsResult(payment_ids=list(ids))

    @activity.defn(name=c.RECONCILE_PAYMENT)
    async def reconcile_payment(self, inp: c.ReconcilePaymentInput) -> c.ReconcilePaymentResult:
        async with self._factory() as session:
            payment = await session.get(Payment, inp.payment_id)
        if payment is None or payment.method != "wechat" or self._wechat is None:
            return c.ReconcilePaymentResult(payment_id=inp.payment_id, status=payment.status if payment else "")
        try:
            paid = await self._wechat.query(payment.id)
        except WeChatPayError as err:
            if err.status == 404:  # the order never reached WeChat: nothing was paid
                return c.ReconcilePaymentResult(payment_id=payment.id, status=payment.status)
            raise
        if paid.trade_state != "SUCCESS":
            return c.ReconcilePaymentResult(payment_id=payment.id, status=payment.status)
        async with self._factory() as session, session.begin():
            before = await session.scalar(select(LedgerEntry.id).where(LedgerEntry.payment_id == payment.id).limit(1))
            landed_payment, parts = await channel_paid(session, channel="wechat", payment_id=payment.id,
                                              amount_fen=paid.amount_fen, trade_no=paid.transaction_id)
        landed = [] if before is not None else [c.AllocationResult(visit_id=v, amount_fen=a) for v, a in parts]
        return c.ReconcilePaymentResult(payment_id=payment.id, status=landed_payment.status, landed=landed)
