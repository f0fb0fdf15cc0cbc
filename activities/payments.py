"""Reconciliation: ask the channels about payments that stayed pending or unknown (their
notification never came, or our call timed out) and land the money they report."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from db.models import Payment
from db.repositories import utcnow
from domain.channels import ChannelName
from domain.payment import UNRESOLVED, WAITING
from integrations.payments.channels import PAID_STATES, Channel, Paid
from ledger.payments import channel_paid, payment_failed
from ledger.refunds import refund_input
from workflows import contracts as c


class PaymentActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], channels: Mapping[str, Channel]) -> None:
        self._factory = factory
        self._channels = channels
        self._queryable = [name for name in channels if name != ChannelName.sandbox]  # the sandbox's record is ours

    async def _ask(self, payment: Payment) -> Paid | None:
        """What the channel says about this order; None when it has nothing (yet)."""
        channel = self._channels.get(payment.method)
        return None if channel is None else await channel.query(payment.id)

    @activity.defn(name=c.FIND_STALE_PAYMENTS)
    async def find_stale_payments(self, inp: c.ReconcileInput) -> c.StalePaymentsResult:
        cutoff = utcnow() - timedelta(seconds=inp.older_than_seconds)
        async with self._factory() as session:
            ids = (
                await session.scalars(
                    select(Payment.id)
                    .where(
                        Payment.status.in_(UNRESOLVED),
                        Payment.method.in_(self._queryable),
                        Payment.created_at < cutoff,
                    )
                    .order_by(Payment.created_at)
                    .limit(500)
                )
            ).all()
        return c.StalePaymentsResult(payment_ids=list(ids))

    async def _close(self, payment: Payment) -> None:
        """Close the order at its channel, so the patient can no longer pay it."""
        if (channel := self._channels.get(payment.method)) is not None:
            await channel.close(payment.id)

    async def _land(self, payment: Payment, paid: Paid) -> c.ReconcilePaymentResult:
        async with self._factory() as session, session.begin():
            landed = await channel_paid(
                session,
                channel=payment.method,
                payment_id=payment.id,
                amount_fen=paid.amount_fen,
                trade_no=paid.transaction_id,
            )
            refunds = [refund_input(r) for r in landed.refunds]
        parts = [c.AllocationResult(visit_id=v, amount_fen=a) for v, a in landed.parts] if landed.new else []
        return c.ReconcilePaymentResult(
            payment_id=payment.id, status=landed.payment.status, landed=parts, refunds=refunds
        )

    @activity.defn(name=c.RECONCILE_PAYMENT)
    async def reconcile_payment(self, inp: c.ReconcilePaymentInput) -> c.ReconcilePaymentResult:
        async with self._factory() as session:
            payment = await session.get(Payment, inp.payment_id)
        if payment is None:
            return c.ReconcilePaymentResult(payment_id=inp.payment_id, status="")
        paid = await self._ask(payment)
        if paid is not None and paid.trade_state in PAID_STATES:
            return await self._land(payment, paid)
        expired = (
            inp.close_if_older_than_seconds > 0
            and payment.status in UNRESOLVED
            and payment.created_at < utcnow() - timedelta(seconds=inp.close_if_older_than_seconds)
        )
        if expired:  # abandoned: close it, so reconciliation stops asking and nobody pays it later
            return await self.close_payment(inp)
        return c.ReconcilePaymentResult(payment_id=payment.id, status=payment.status)

    @activity.defn(name=c.CLOSE_PAYMENT)
    async def close_payment(self, inp: c.ReconcilePaymentInput) -> c.ReconcilePaymentResult:
        """Close an unpaid order; then the channel's answer decides: paid after all (landed
        now) or failed for good. Safe to repeat."""
        async with self._factory() as session:
            payment = await session.get(Payment, inp.payment_id)
        if payment is None:
            return c.ReconcilePaymentResult(payment_id=inp.payment_id, status="")
        if payment.status not in WAITING:
            return c.ReconcilePaymentResult(payment_id=payment.id, status=payment.status)
        await self._close(payment)
        paid = await self._ask(payment)  # the close does not say whether it was paid first
        if paid is not None and paid.trade_state in PAID_STATES:
            return await self._land(payment, paid)
        async with self._factory() as session, session.begin():
            failed = await payment_failed(
                session, payment.id, actor=f"channel:{payment.method}", reason="order closed unpaid"
            )
            status = failed.status if failed is not None else ""
        return c.ReconcilePaymentResult(payment_id=payment.id, status=status)
