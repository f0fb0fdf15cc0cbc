"""People's control over a visit's sanctions through the `operator_action` update, on the dev
server with time skipping: holds across the deadline, disputes upheld and rejected, a waiver
that settles, a four-eyes write-off, a visit the HIS never discharges, an action across a
continue-as-new and two years unpaid with a bounded history."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from db.models import AuditLog, LedgerEntry, Visit, VisitEvent
from db.oversight import Approval, Dispute
from tests.support import Simulators, card_events, credit_records, rows, uid
from tests.workflows.test_visit_workflow import POLICY, SH, now_of, quick_visit, record, sms, start, wait_for
from workflows import contracts as c
from workflows.visit import VisitWorkflow
from workflows.visit_context import DISPUTED, HOLD

Factory = async_sessionmaker[AsyncSession]
SECOND = timedelta(seconds=5)  # the virtual clock moves a little while a test talks to the workflow


async def act(handle: WorkflowHandle, action: str, operator: str = "op-1", **fields: object) -> c.VisitRecordResult:
    inp = c.OperatorActionInput(action=action, operator=operator, reason=f"{action} by {operator}", **fields)  # type: ignore[arg-type]  # the action's own fields
    return await handle.execute_update(VisitWorkflow.operator_action, inp)


async def refused(handle: WorkflowHandle, action: str, operator: str = "op-1", **fields: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await act(handle, action, operator, **fields)
    cause = err.value.cause
    assert isinstance(cause, ApplicationError)
    return str(cause.type)


async def visit_row(factory: Factory, visit_id: str) -> Visit:
    return (await rows(factory, Visit, id=visit_id))[0]


async def walk(env: WorkflowEnvironment, handle: WorkflowHandle, total: timedelta, step: timedelta) -> None:
    """Fast-forward the latest run in steps: a run that continued as new gets its clock moved
    to the end of the step it started in, so its timers on the way fire, late, at that end."""
    latest = env.client.get_workflow_handle(handle.id)
    while total > timedelta(0):
        await env.fast_forward(latest, min(step, total))
        total -= step


async def latest_state(handle: WorkflowHandle) -> c.VisitStateResult:
    """The `state` of the latest run; one that has just continued as new answers in a moment."""
    for _ in range(100):
        try:
            return await handle.query(VisitWorkflow.state)
        except RPCError as err:
            if "not scheduled yet" not in err.message:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the latest run never answered")


def close(a: datetime | None, b: datetime) -> bool:
    return a is not None and abs(a - b) <= SECOND


async def discharged_unpaid(env: WorkflowEnvironment, factory: Factory, queue: str, **kw: object):
    handle, visit_id, patient_id = await start(env, factory, queue, **kw)  # type: ignore[arg-type]  # start's own options
    await quick_visit(handle)
    state = await wait_for(handle, lambda s: s.payment_status == "due")
    assert state.due_at is not None
    return handle, visit_id, patient_id, state.due_at


async def test_on_hold_across_the_deadline_then_resumed(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id, due_at = await discharged_unpaid(temporal_env, factory, worker)
    await temporal_env.fast_forward(handle, timedelta(days=5))
    paused = await act(handle, "pause_sanctions")
    assert paused.hold_kind == "operator" and paused.hold_reason == "pause_sanctions by op-1"
    row = await visit_row(factory, visit_id)
    assert (row.hold_kind, row.hold_reason) == ("operator", "pause_sanctions by op-1")
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(HOLD) == "operator" and attrs.get(DISPUTED) is False
    since = await now_of(handle)
    await temporal_env.fast_forward(handle, timedelta(days=4))  # across the deadline
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "arrears" and not state.card_locked and not state.credit_reported
    assert await card_events(simulators, patient_id) == []
    assert await credit_records(simulators, visit_id) == []
    texts = [m.template for m in await sms(factory, visit_id)]
    assert "pre_default" not in texts  # the notice was due on day 6: not under the hold
    dunning_before = sum(t in ("arrears", "dunning") for t in texts)
    resumed = await act(handle, "resume_sanctions", "op-2")
    lasted = await now_of(handle) - since
    assert resumed.hold_kind is None and close(resumed.due_at, due_at + lasted)
    assert close((await visit_row(factory, visit_id)).due_at, due_at + lasted)
    await temporal_env.fast_forward(handle, lasted + timedelta(days=1, hours=12))
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "defaulted" and state.card_locked
    [lock] = await card_events(simulators, patient_id)
    assert lock.at >= due_at + lasted - SECOND
    texts = [m.template for m in await sms(factory, visit_id)]
    assert "pre_default" in texts and sum(t in ("arrears", "dunning") for t in texts) > dunning_before
    actions = [(a.actor, a.action, a.reason) for a in await rows(factory, AuditLog, subject_id=visit_id)]
    assert ("op-1", "pause_sanctions", "pause_sanctions by op-1") in actions
    assert ("op-2", "resume_sanctions", "resume_sanctions by op-2") in actions
    await record(handle, "paused_across_the_deadline_then_resumed")
    await handle.terminate("test over")


async def test_a_dispute_upheld_after_a_default_unlocks_and_corrects(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id, _ = await discharged_unpaid(temporal_env, factory, worker)
    await temporal_env.fast_forward(handle, timedelta(days=7, hours=9))
    assert (await handle.query(VisitWorkflow.state)).card_locked
    opened = await act(handle, "open_dispute", f"patient:{patient_id}", dispute_id="dsp_up")
    assert opened.hold_kind == "dispute"
    assert await refused(handle, "open_dispute", f"patient:{patient_id}", dispute_id="dsp_two") == "dispute_open"
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert (dispute.id, dispute.status, dispute.opened_by) == ("dsp_up", "open", f"patient:{patient_id}")
    assert (await handle.describe()).typed_search_attributes.get(DISPUTED) is True
    assert await refused(handle, "resolve_dispute", dispute_id="dsp_x", outcome="upheld") == "dispute_not_found"
    upheld = await act(handle, "resolve_dispute", dispute_id="dsp_up", outcome="upheld")
    assert upheld.payment_status == "settled" and upheld.balance_fen == 0 and upheld.waived_fen == 5000
    assert not upheld.card_locked and not upheld.credit_reported and upheld.hold_kind is None
    result = await handle.result()
    assert result.payment_status == "settled"
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock", "unlock"]
    assert [r.kind for r in await credit_records(simulators, visit_id)] == ["report", "correction"]
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert (dispute.status, dispute.outcome, dispute.waived_fen, dispute.resolved_by) == (
        "resolved",
        "upheld",
        5000,
        "op-1",
    )
    texts = [m.template for m in await sms(factory, visit_id)]
    assert "dispute_upheld" in texts and "payment_received_unlocked" not in texts
    [waiver] = [e for e in await rows(factory, LedgerEntry, visit_id=visit_id) if e.kind == "waiver"]
    assert waiver.amount_fen == 5000
    await record(handle, "dispute_upheld_after_default")


async def test_a_dispute_rejected_then_defaults_at_the_moved_deadline(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id, due_at = await discharged_unpaid(temporal_env, factory, worker)
    await temporal_env.fast_forward(handle, timedelta(days=2))
    await act(handle, "open_dispute", "his:window-3", dispute_id="dsp_no")
    since = await now_of(handle)
    await temporal_env.fast_forward(handle, timedelta(days=3))
    rejected = await act(handle, "resolve_dispute", dispute_id="dsp_no", outcome="rejected")
    lasted = await now_of(handle) - since
    assert rejected.hold_kind is None and close(rejected.due_at, due_at + lasted)
    assert "dispute_rejected" in [m.template for m in await sms(factory, visit_id)]
    await temporal_env.fast_forward(handle, due_at - await now_of(handle) + timedelta(hours=1))
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "arrears" and not state.card_locked  # the old deadline has passed
    await temporal_env.fast_forward(handle, lasted + timedelta(days=1))
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "defaulted" and state.card_locked
    [lock] = await card_events(simulators, patient_id)
    assert lock.at >= due_at + lasted - SECOND
    await record(handle, "dispute_rejected_then_default")
    await handle.terminate("test over")


async def test_a_waiver_that_settles(temporal_env: WorkflowEnvironment, factory: Factory, worker: str) -> None:
    handle, visit_id, _, _ = await discharged_unpaid(temporal_env, factory, worker)
    assert await refused(handle, "waive", amount_fen=5001) == "invalid_action"
    part = await act(handle, "waive", amount_fen=1000)
    assert (part.balance_fen, part.waived_fen, part.payment_status) == (4000, 1000, "due")
    rest = await act(handle, "waive", "op-2", amount_fen=4000)
    assert (rest.balance_fen, rest.waived_fen, rest.payment_status) == (0, 5000, "settled")
    result = await handle.result()
    assert result.payment_status == "settled"
    waivers = [e.amount_fen for e in await rows(factory, LedgerEntry, visit_id=visit_id) if e.kind == "waiver"]
    assert sorted(waivers) == [1000, 4000]
    await record(handle, "waived_to_settled")


async def test_a_write_off_needs_a_second_operator(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id, _ = await discharged_unpaid(temporal_env, factory, worker)
    await temporal_env.fast_forward(handle, timedelta(days=7, hours=9))
    asked = await act(handle, "write_off")
    approval_id = asked.pending_approval_id
    assert approval_id and asked.payment_status == "defaulted"
    [row] = await rows(factory, Approval, visit_id=visit_id)
    assert (row.id, row.status, row.requested_by) == (approval_id, "pending_approval", "op-1")
    assert await refused(handle, "approve", approval_id=approval_id) == "same_operator"
    assert await refused(handle, "approve", "op-2", approval_id="nope") == "approval_not_found"
    done = await act(handle, "approve", "op-2", approval_id=approval_id)
    assert done.payment_status == "written_off" and done.pending_approval_id is None
    assert not done.card_locked and not done.credit_reported and done.balance_fen == 5000
    result = await handle.result()
    assert result.payment_status == "written_off"
    [row] = await rows(factory, Approval, visit_id=visit_id)
    assert (row.status, row.decided_by) == ("approved", "op-2")
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock", "unlock"]
    assert [r.kind for r in await credit_records(simulators, visit_id)] == ["report", "correction"]
    assert (await visit_row(factory, visit_id)).payment_status == "written_off"
    await record(handle, "written_off_by_a_second_operator")


async def test_a_visit_never_discharged_is_discharged_in_the_end(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
    handle, visit_id, _ = await start(temporal_env, factory, worker)  # auto-discharge after two days here
    # two days after the workflow started (start() moved the clock up to a day ahead since)
    started = (await handle.describe()).start_time
    now = await temporal_env.get_current_time(handle)
    await temporal_env.fast_forward(handle, started + timedelta(days=2, minutes=1) - now)
    state = await wait_for(handle, lambda s: s.stage == "discharged")
    row = await visit_row(factory, visit_id)
    assert row.auto_discharged and row.discharged_at is not None
    # a minute later: still the visit day, unless that minute crossed local midnight
    now = await temporal_env.get_current_time(handle)
    same_day = row.discharged_at.astimezone(SH).date() == now.astimezone(SH).date()
    assert state.payment_status == ("due" if same_day else "arrears")
    [ev] = await rows(factory, VisitEvent, visit_id=visit_id)
    assert ev.type == "discharged" and ev.payload.get("auto") is True
    assert "auto_discharged" in [a.action for a in await rows(factory, AuditLog, subject_id=visit_id)]
    await handle.terminate("test over")


async def runs(env: WorkflowEnvironment, workflow_id: str) -> list[int]:
    """The history length of each run of a workflow, first run first."""
    lengths = []
    async for wf in env.client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        history = await env.client.get_workflow_handle(workflow_id, run_id=wf.run_id).fetch_history()
        lengths.append((wf.start_time, len(history.events)))
    return [n for _, n in sorted(lengths)]


async def test_actions_across_a_continue_as_new(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    """A short history limit: the visit continues as new between actions, and each run knows
    the open dispute, the moved deadline and the write-off waiting for its second operator."""
    handle, visit_id, patient_id, due_at = await discharged_unpaid(
        temporal_env, factory, worker, continue_after_events=60
    )
    dispute_id = uid("dsp_")
    await act(handle, "open_dispute", f"patient:{patient_id}", dispute_id=dispute_id)
    asked = await act(handle, "write_off")
    first_runs = len(await runs(temporal_env, handle.id))  # 1 or 2: how the events fell into tasks
    extended = due_at
    for _ in range(8):  # each action adds to the history: the visit continues as new on the way
        extended += timedelta(days=1)
        answer = await act(handle, "extend_deadline", "op-3", due_at=extended)
        assert answer.hold_kind == "dispute" and answer.pending_approval_id == asked.pending_approval_id
    assert len(await runs(temporal_env, handle.id)) > first_runs  # it continued as new among the actions
    assert await refused(handle, "open_dispute", f"patient:{patient_id}", dispute_id=uid("dsp_")) == "dispute_open"
    assert await refused(handle, "approve", approval_id=asked.pending_approval_id) == "same_operator"
    rejected = await act(handle, "resolve_dispute", "op-2", dispute_id=dispute_id, outcome="rejected")
    assert rejected.hold_kind is None and rejected.due_at is not None and rejected.due_at >= extended
    done = await act(handle, "approve", "op-2", approval_id=asked.pending_approval_id)
    assert done.payment_status == "written_off"
    assert (await handle.result()).payment_status == "written_off"
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert (dispute.status, dispute.outcome) == ("resolved", "rejected")
    assert await card_events(simulators, patient_id) == []
    await record(temporal_env.client.get_workflow_handle(handle.id), "written_off_in_a_continued_run")


async def test_two_years_unpaid_with_a_bounded_history(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
    limit = 400
    handle, visit_id, _, _ = await discharged_unpaid(
        temporal_env, factory, worker, policy=POLICY, continue_after_events=limit
    )
    await walk(temporal_env, handle, timedelta(days=100), timedelta(days=1))  # reminders stop on day 97
    await walk(temporal_env, handle, timedelta(days=630), timedelta(days=630))
    state = await latest_state(handle)
    assert state.payment_status == "defaulted" and state.balance_fen == 5000
    lengths = await runs(temporal_env, handle.id)
    assert len(lengths) >= 2, lengths
    assert all(n <= limit + 60 for n in lengths), lengths  # the step in hand finishes first
    reminders = [m for m in await sms(factory, visit_id) if m.template.startswith("dunning")]
    assert reminders and max(m.created_at for m in reminders) <= state.due_at + timedelta(days=91)  # type: ignore[operator]  # due_at is set
    await handle.terminate("test over")


async def test_unlock_card_releases_this_visits_hold_only(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    first, _, patient_id = await start(temporal_env, factory, worker)
    second, _, _ = await start(temporal_env, factory, worker, patient_id=patient_id)
    for handle in (first, second):
        await quick_visit(handle)
        await wait_for(handle, lambda s: s.payment_status == "due")
        await temporal_env.fast_forward(handle, timedelta(days=7, hours=9))
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock"]
    released = await act(first, "unlock_card")
    assert released.payment_status == "defaulted" and released.card_locked  # the other visit holds it
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock"]
    assert await refused(first, "unlock_card") == "invalid_action"
    await act(second, "unlock_card")
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock", "unlock"]
    await temporal_env.fast_forward(first, timedelta(days=2))
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock", "unlock"]  # never again
    for handle in (first, second):
        await handle.terminate("test over")
