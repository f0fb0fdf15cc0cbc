"""ReconcileWorkflow: run by the `reconcile-payments` schedule. Asks the channels about every
stale pending payment, tells the visits about money that landed, sends back what it paid
beyond the bill, and restarts refunds whose workflow never started."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows import contracts as c
    from workflows.refund import start_refunds

RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30),
                    maximum_attempts=5)


async def tell_visits(payment_id: str, landed: list[c.AllocationResult]) -> None:
    """Signal each visit the money landed on, one after the other."""
    for part in landed:
        try:
            await workflow.get_external_workflow_handle(c.workflow_id(part.visit_id)).signal(
                "payment_received", c.PaymentReceivedInput(payment_id=payment_id, amount_fen=part.amount_fen))
        except Exception:  # noqa: BLE001 - a settled visit's workflow is gone; its money is booked
            workflow.logger.info("visit %s no longer waits for payment %s", part.visit_id, payment_id)


@workflow.defn
class ReconcileWorkflow:
    @workflow.run
    async def run(self, inp: c.ReconcileInput) -> c.ReconcileResult:
        stale = await workflow.execute_activity(
            c.FIND_STALE_PAYMENTS, inp, result_type=c.StalePaymentsResult,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY, summary="find stale payments")
        landed = 0
        for payment_id in stale.payment_ids:
            result = await workflow.execute_activity(
                c.RECONCILE_PAYMENT, c.ReconcilePaymentInput(payment_id=payment_id,
                                                             close_if_older_than_seconds=inp.expire_after_seconds),
                result_type=c.ReconcilePaymentResult, start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RETRY, summary=f"ask the channel about {payment_id}")
            landed += len(result.landed)
            await tell_visits(payment_id, result.landed)
            await start_refunds(result.refunds)
        resumed = 0
        if workflow.patched("reconcile-refunds"):
            stale_refunds = await workflow.execute_activity(
                c.FIND_STALE_REFUNDS, inp, result_type=c.StaleRefundsResult,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY, summary="find stalled refunds")
            resumed = await start_refunds(stale_refunds.refunds)
        return c.ReconcileResult(checked=len(stale.payment_ids), landed=landed, refunds_resumed=resumed)
