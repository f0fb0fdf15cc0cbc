"""The `record_event` update answers with the visit as recorded in the database (the API
answers the HIS from it): the stage and bill of the event, and the payment status, deadlines
and sanctions as last written, never ahead of the database."""

from __future__ import annotations

from datetime import UTC

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from db.models import Visit
from tests.support import add_patient, add_visit, rows
from tests.workflows.test_visit_workflow import POLICY, event, item, start, wait_for
from workflows import contracts as c
from workflows.visit import VisitWorkflow

Factory = async_sessionmaker[AsyncSession]


FIELDS = ("stage", "payment_status", "discharged_at", "arrears_at", "due_at", "card_locked", "credit_reported")


def as_recorded(visit: Visit) -> dict[str, object]:
    return {f: getattr(visit, f) for f in FIELDS}


def answered(answer: c.VisitRecordResult) -> dict[str, object]:
    return {f: getattr(answer, f) for f in FIELDS}


async def test_the_first_event_waits_for_the_registration_fee(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
    """A visit whose workflow starts with its first event (a registration cut short): the
    event's answer already carries the fee, booked before the event's charges."""
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=700)
    handle = await temporal_env.client.start_workflow(
        VisitWorkflow.run,
        c.VisitInput(visit_id=visit_id, patient_id=patient_id, registration_fee_fen=700, policy=POLICY),
        id=c.workflow_id(visit_id),
        task_queue=worker,
    )
    inp = c.RecordEventInput(event_id="e1", type="checked_in", occurred_at=await temporal_env.get_current_time(handle))
    answer = await handle.execute_update(VisitWorkflow.record_event, inp, id="e1")
    assert (answer.stage, answer.total_fen, answer.balance_fen) == ("checked_in", 700, 700)
    await handle.terminate("test over")


async def test_the_answer_is_the_visit_as_recorded(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
    handle, visit_id, _ = await start(temporal_env, factory, worker)
    await event(handle, "e1", "checked_in")
    first = await event(handle, "e2", "called")
    [visit] = await rows(factory, Visit, id=visit_id)
    assert answered(first) == as_recorded(visit) and first.payment_status == "open"
    await event(handle, "e3", "consultation_started")
    await event(handle, "e4", "orders_placed", items=[item("ct", "exam", 20000), item("lab", "lab", 3000)])
    await event(handle, "e5", "consultation_ended")
    await event(handle, "e6", "discharged")
    await wait_for(handle, lambda s: s.payment_status == "due")
    later = await event(handle, "e7", "orders_cancelled", item_ids=["lab"])
    [visit] = await rows(factory, Visit, id=visit_id)
    assert answered(later) == as_recorded(visit)
    assert later.payment_status == "due" and later.due_at is not None and later.due_at.tzinfo == UTC
    assert (later.total_fen, later.balance_fen) == (20500, 20500)
    await handle.terminate("test over")
