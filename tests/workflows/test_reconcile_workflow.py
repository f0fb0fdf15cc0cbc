"""ReconcileWorkflow on the real dev server: refunds whose workflow never started (the API
died between its commit and the start) are started by the next reconciliation."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from db.models import LedgerEntry, Payment, Refund
from ledger.refunds import refund_credit
from tests.support import add_patient, add_visit, now, pay, rows, uid
from tests.workflows.test_visit_workflow import record
from workflows import contracts as c
from workflows.reconcile import ReconcileWorkflow

Factory = async_sessionmaker[AsyncSession]


async def test_a_refund_left_waiting_is_started_and_completes(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=500)
    async with factory() as session, session.begin():
        session.add(
            LedgerEntry(
                idempotency_key=f"visit-{visit_id}:registration",
                visit_id=visit_id,
                patient_id=patient_id,
                kind="charge",
                amount_fen=500,
                created_at=now(),
            )
        )
    payment_id = await pay(factory, patient_id, visit_id, 800, method="sandbox")  # 300 too much
    async with factory() as session, session.begin():
        [refund] = await refund_credit(
            session, visit_id=visit_id, patient_id=patient_id, reason="overpayment", actor="test"
        )
    # ... and the process stops before starting the refund's workflow
    with temporal_env.with_time_skipping_disabled():
        handle = await temporal_env.client.start_workflow(
            ReconcileWorkflow.run, c.ReconcileInput(older_than_seconds=0), id=uid("reconcile-"), task_queue=worker
        )
        result = await handle.result()
    assert result.refunds_resumed >= 1
    child = temporal_env.client.get_workflow_handle(c.refund_workflow_id(refund.id), result_type=c.RefundStatusResult)
    assert (await child.result()).status == "succeeded"
    [done] = await rows(factory, Refund, id=refund.id)
    [paid] = await rows(factory, Payment, id=payment_id)
    assert (done.status, done.amount_fen, paid.refunded_fen, paid.status) == (
        "succeeded",
        300,
        300,
        "partially_refunded",
    )
    await record(handle, "reconcile_resumes_a_refund")
