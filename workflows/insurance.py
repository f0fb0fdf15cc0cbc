"""InsurancePaymentWorkflow (`insurance-pay-{settlement_id}`): 医保脱卡支付 as a saga.

The bureau has pre-settled the bill into pooled fund, personal account and self-pay. This
settles the insurance part, then waits for the patient's self-pay part at a channel. If the
self-pay lands, the insurance part is booked in the ledger and the visits are told; if it
does not land in time, the self-pay order is closed at the channel and, unless the channel
says it was paid after all, the insurance settlement is reversed (冲正), so the insurance
never pays for a bill the patient left half-paid."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.money import format_fen
    from workflows import contracts as c
    from workflows.reconcile import tell_visits
    from workflows.refund import start_refunds

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=1), non_retryable_error_types=["invalid_input"])
TIMEOUT = timedelta(seconds=30)
PAID = ("succeeded", "partially_refunded", "refunded")


@workflow.defn
class InsurancePaymentWorkflow:
    def __init__(self) -> None:
        self._status = "presettled"
        self._self_paid = False

    @workflow.run
    async def run(self, inp: c.InsurancePaymentInput) -> c.SettlementResult:
        self._describe(inp)
        settled = await workflow.execute_activity(
            c.SETTLE_INSURANCE, c.SettlementInput(settlement_id=inp.settlement_id), result_type=c.SettlementResult,
            start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
            summary=f"settle the insurance part {format_fen(inp.insurance_fen)} with the bureau")
        self._status = settled.status
        self._describe(inp)
        if settled.status != "insurance_settled":
            if inp.self_pay_payment_id and workflow.patched("close-self-pay"):
                # the bureau refused: the self-pay order is no longer wanted (paid already: it
                # lands as an ordinary payment of the bill)
                asked = await workflow.execute_activity(
                    c.CLOSE_PAYMENT, c.ReconcilePaymentInput(payment_id=inp.self_pay_payment_id),
                    result_type=c.ReconcilePaymentResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
                    summary="close the self-pay order")
                await tell_visits(inp.self_pay_payment_id, asked.landed)
                await start_refunds(asked.refunds)
            return settled
        if inp.self_pay_fen > 0:
            try:
                await workflow.wait_condition(lambda: self._self_paid,
                                              timeout=timedelta(seconds=inp.self_pay_timeout_seconds),
                                              timeout_summary="self-pay deadline")
            except asyncio.TimeoutError:
                # the notification may be lost: close the order (so it cannot be paid after the
                # 冲正) and let the channel's answer decide; older runs only asked
                closing = workflow.patched("close-self-pay")
                asked = await workflow.execute_activity(
                    c.CLOSE_PAYMENT if closing else c.RECONCILE_PAYMENT,
                    c.ReconcilePaymentInput(payment_id=inp.self_pay_payment_id),
                    result_type=c.ReconcilePaymentResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
                    summary="close the self-pay order" if closing else "ask the channel about the self-pay part")
                await tell_visits(inp.self_pay_payment_id, asked.landed)
                await start_refunds(asked.refunds)
                if asked.status not in PAID:
                    reversed_ = await workflow.execute_activity(
                        c.REVERSE_INSURANCE, c.SettlementInput(settlement_id=inp.settlement_id),
                        result_type=c.SettlementResult, start_to_close_timeout=TIMEOUT, retry_policy=RETRY,
                        summary="冲正: reverse the insurance settlement")
                    self._status = reversed_.status
                    self._describe(inp)
                    return reversed_
        booked = await workflow.execute_activity(
            c.BOOK_INSURANCE, c.SettlementInput(settlement_id=inp.settlement_id), result_type=c.SettlementResult,
            start_to_close_timeout=TIMEOUT, retry_policy=RETRY, summary="book the insurance part in the ledger")
        await tell_visits(inp.settlement_id, booked.landed)
        await start_refunds(booked.refunds)
        self._status = booked.status
        self._describe(inp)
        return booked

    @workflow.signal
    def self_pay_received(self) -> None:
        self._self_paid = True

    @workflow.query
    def status(self) -> str:
        return self._status

    def _describe(self, inp: c.InsurancePaymentInput) -> None:
        workflow.set_current_details("\n\n".join([
            f"**Settlement:** {inp.settlement_id}", f"**Status:** {self._status}",
            f"**Insurance part:** {format_fen(inp.insurance_fen)}", f"**Self-pay part:** {format_fen(inp.self_pay_fen)}"]))
