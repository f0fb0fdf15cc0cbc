"""A visit's default as the credit platform receives it, through the real workflow: the §15
notice evidence names the pre-default text the visit sent, and nothing of the visit's clinical
detail goes along. The workflow's clock is pinned (tests/workflows/test_visit_workflow.py)."""

from __future__ import annotations

import json
from datetime import timedelta

from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment

from config import Settings
from db.models import SmsMessage
from tests.activities.test_credit import received
from tests.support import Simulators, pay, rows
from tests.workflows.test_visit_workflow import Factory, quick_visit, start, wait_for
from worker import ensure_credit_upkeep_schedule
from workflows import contracts as c, contracts_credit as k
from workflows.visit import VisitWorkflow


async def test_the_default_carries_the_notice_the_visit_sent(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker)
    await quick_visit(handle)
    await wait_for(handle, lambda s: s.payment_status == "due")
    await temporal_env.fast_forward(handle, timedelta(days=7, hours=9))
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "defaulted" and state.notice_sent_at is not None
    [notice] = [m for m in await rows(factory, SmsMessage, visit_id=visit_id) if m.template == "pre_default"]
    [report] = await received(simulators, visit_id)
    sent = report["received"]
    assert (sent["notice_channel"], sent["notice_message_id"], sent["notice_template"]) == (
        "sms",
        str(notice.id),  # the test worker's SMS has no gateway: our outbox row's id, and it says so
        "pre_default",
    )
    assert sent["notice_message_id_kind"] == "outbox"
    assert sent["notice_sent_at"] == state.notice_sent_at.isoformat()
    assert sent["status"] == "reported" and sent["amount_owed_fen"] == 5000
    text = json.dumps(sent, ensure_ascii=False)
    assert not [word for word in ("内科", "项目lab1", "Clab1", '"lab"') if word in text]

    await pay(factory, patient_id, visit_id, 5000)
    await handle.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p", amount_fen=5000))
    await handle.result()
    reports = await received(simulators, visit_id)
    assert [(r["kind"], r["status"]) for r in reports] == [("report", "reported"), ("correction", "corrected_paid")]


async def test_the_upkeep_runs_on_a_schedule(temporal_env: WorkflowEnvironment, settings: Settings) -> None:
    """Created once, kept up to date: the retention and the interval as the settings say."""
    client = temporal_env.client
    await ensure_credit_upkeep_schedule(client, settings)
    changed = settings.model_copy(update={"credit_retention_days": 30, "credit_upkeep_every": timedelta(minutes=7)})
    await ensure_credit_upkeep_schedule(client, changed)  # already there: updated
    handle = client.get_schedule_handle(k.CREDIT_UPKEEP_SCHEDULE_ID)
    try:
        described = await handle.describe()
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "CreditUpkeepWorkflow" and action.task_queue == settings.task_queue
        [arg] = await client.data_converter.decode(list(action.args))
        assert arg == {"retention_days": 30}
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(minutes=7)]
    finally:
        await handle.delete()
