"""ReconcileWorkflow: run by the `reconcile-payments` schedule. Asks the channels about every
stale pending payment, tells the visits about money that landed, sends back what it paid
beyond the bill, and restarts refunds whose workflow never started."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import activities as a, contracts as c
    from workflows.refund import start_refunds
    from workflows.retries import SWEEP
    from workflows.steps import call


async def tell_visits(payment_id: str, landed: list[c.AllocationResult]) -> None:
    """Signal each visit the money landed on, one after the other."""
    for part in landed:
        try:
            await workflow.get_external_workflow_handle(c.workflow_id(part.visit_id)).signal(
                "payment_received", c.PaymentReceivedInput(payment_id=payment_id, amount_fen=part.amount_fen)
            )
        except Exception:
            workflow.logger.info("visit %s no longer waits for payment %s", part.visit_id, payment_id)


@workflow.defn
class ReconcileWorkflow:
    @workflow.run
    async def run(self, inp: c.ReconcileInput) -> c.ReconcileResult:
        stale = await call(a.find_stale_payments, inp, retries=SWEEP, summary="find stale payments")
        landed = 0
        for payment_id in stale.payment_ids:
            result = await call(
                a.reconcile_payment,
                c.ReconcilePaymentInput(payment_id=payment_id, close_if_older_than_seconds=inp.expire_after_seconds),
                retries=SWEEP,
                summary=f"ask the channel about {payment_id}",
            )
            landed += len(result.landed)
            await tell_visits(payment_id, result.landed)
            await start_refunds(result.refunds)
        stale_refunds = await call(a.find_stale_refunds, inp, retries=SWEEP, summary="find stalled refunds")
        resumed = await start_refunds(stale_refunds.refunds)
        return c.ReconcileResult(checked=len(stale.payment_ids), landed=landed, refunds_resumed=resumed)
