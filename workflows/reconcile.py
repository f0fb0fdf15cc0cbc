"""ReconcileWorkflow: run by the `reconcile-payments` schedule. Asks the channels about every
stale pending payment, tells the visits about money that landed, sends back what it paid
beyond the bill, restarts refunds whose workflow never started, and starts the workflow of each
医保移动支付 order still paying past its deadline whose workflow is gone (it asks 6301 and books
or takes the order back at once; one still running is left alone)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from workflows import activities as a, contracts as c, contracts_mobile as m
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
        await _resume_mobile_orders(inp)
        return c.ReconcileResult(checked=len(stale.payment_ids), landed=landed, refunds_resumed=resumed)


async def _resume_mobile_orders(inp: c.ReconcileInput) -> int:
    """Each mobile order still paying past its deadline gets its workflow again, with no time
    left: it asks 6301 and books or takes the order back (6401). One running is left alone."""
    orphaned = await call(a.find_orphaned_mobile_orders, inp, retries=SWEEP, summary="find unsettled mobile orders")
    started = 0
    for order in orphaned.orders:
        try:
            await workflow.start_child_workflow(
                "MobileInsurancePaymentWorkflow",
                order,
                id=m.mobile_workflow_id(order.settlement_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"医保移动支付 {order.settlement_id} (reconciliation)",
            )
            started += 1
        except WorkflowAlreadyStartedError:
            pass
    return started
