"""Operators' actions against the payment loop (issue 10's review): an action that lands while
the card lock is at the bureau wins; a waiver is judged on the ledger's balance and changes
nothing when the ledger refuses it; settling closes an open dispute and a waiting write-off;
a dispute rejected after the default names no past deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from fastapi import Request, Response
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from db.models import AuditLog
from db.oversight import Approval, Dispute
from tests.support import Simulators, card_events, credit_records, pay, rows, uid
from tests.workflows.test_oversight import Factory, act, discharged_unpaid, refused
from tests.workflows.test_visit_workflow import now_of, sms
from workflows import contracts as c
from workflows.visit import VisitWorkflow
from workflows.visit_context import DISPUTED, HOLD

FAR = datetime(2100, 1, 1, tzinfo=UTC)  # a deadline far ahead


class BureauDown:
    """The bureau's simulator answers 503 while `down`; `calls` counts what reached it."""

    def __init__(self, sims: Simulators) -> None:
        self.down = True
        self.calls = 0

        @sims.bureau.middleware("http")
        async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            self.calls += 1
            if self.down:
                return Response(status_code=503)
            return await call_next(request)


async def until_the_lock_is_tried(
    env: WorkflowEnvironment, handle: WorkflowHandle, bureau: BureauDown, due_at: datetime
) -> None:
    """Forward the visit to a minute before its card lock (the state says when, once the notice
    is out), then a minute at a time until the lock reached the (down) bureau. A long forward
    past the lock would crawl: once the lock is failing, the server skips time only from one
    retry of the activity to the next."""
    await env.fast_forward(handle, due_at - await now_of(handle) - timedelta(hours=1))
    lock_at = (await handle.query(VisitWorkflow.state)).lock_at or due_at
    await env.fast_forward(handle, max(lock_at - await now_of(handle) - timedelta(minutes=1), timedelta(0)))
    for _ in range(120):
        await env.fast_forward(handle, timedelta(minutes=1))
        for _ in range(20):
            if bureau.calls:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"the lock never reached the bureau (expected at {lock_at})")


async def test_a_dispute_landing_while_the_card_lock_is_at_the_bureau_wins(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    bureau = BureauDown(simulators)
    handle, visit_id, patient_id, due_at = await discharged_unpaid(temporal_env, factory, worker)
    await until_the_lock_is_tried(temporal_env, handle, bureau, due_at)
    opened = await act(handle, "open_dispute", f"patient:{patient_id}", dispute_id=uid("dsp_"))
    assert opened.hold_kind == "dispute" and opened.payment_status != "defaulted"
    bureau.down = False
    await temporal_env.fast_forward(handle, timedelta(minutes=5))  # the lock's next try succeeds
    for _ in range(200):
        events = [e.action for e in await card_events(simulators, patient_id)]
        if events == ["lock", "unlock"]:
            break
        await asyncio.sleep(0.05)
    assert events == ["lock", "unlock"]  # the lock the bureau made late is taken back at once
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status != "defaulted" and not state.card_locked and not state.credit_reported
    assert await credit_records(simulators, visit_id) == []  # never reported under the hold
    await temporal_env.fast_forward(handle, timedelta(days=3))
    assert await credit_records(simulators, visit_id) == []
    assert (await handle.query(VisitWorkflow.state)).payment_status != "defaulted"
    await handle.terminate("test over")


async def test_a_write_off_approved_while_the_card_lock_is_at_the_bureau_wins(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    bureau = BureauDown(simulators)
    handle, visit_id, patient_id, due_at = await discharged_unpaid(temporal_env, factory, worker)
    asked = await act(handle, "write_off")
    await until_the_lock_is_tried(temporal_env, handle, bureau, due_at)
    done = await act(handle, "approve", "op-2", approval_id=asked.pending_approval_id)
    assert done.payment_status == "written_off"
    bureau.down = False
    await temporal_env.fast_forward(handle, timedelta(minutes=5))
    result = await handle.result()
    assert result.payment_status == "written_off" and not result.card_locked and not result.credit_reported
    assert [e.action for e in await card_events(simulators, patient_id)] in ([], ["lock", "unlock"])
    assert await credit_records(simulators, visit_id) == []


async def test_a_waiver_is_judged_on_the_ledgers_balance(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id, _ = await discharged_unpaid(temporal_env, factory, worker)
    await act(handle, "open_dispute", f"patient:{patient_id}", dispute_id="dsp_stale")
    await pay(factory, patient_id, visit_id, 3000)  # its signal never comes: the workflow still says 5000
    assert await refused(handle, "waive", amount_fen=4000) == "invalid_action"
    upheld = {"dispute_id": "dsp_stale", "outcome": "upheld"}
    assert await refused(handle, "resolve_dispute", amount_fen=2500, **upheld) == "invalid_action"
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert dispute.status == "open"  # nothing changed: the dispute is still there to resolve
    assert (await handle.describe()).typed_search_attributes.get(HOLD) == "dispute"
    done = await act(handle, "resolve_dispute", amount_fen=2000, **upheld)
    assert (done.payment_status, done.balance_fen, done.waived_fen) == ("settled", 0, 2000)
    assert (await handle.result()).payment_status == "settled"


async def test_settling_closes_an_open_dispute_and_a_waiting_write_off(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id, _ = await discharged_unpaid(temporal_env, factory, worker)
    await act(handle, "open_dispute", f"patient:{patient_id}", dispute_id=uid("dsp_"))
    asked = await act(handle, "write_off")
    await pay(factory, patient_id, visit_id, 5000)
    await handle.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p", amount_fen=5000))
    assert (await handle.result()).payment_status == "settled"
    [dispute] = await rows(factory, Dispute, visit_id=visit_id)
    assert (dispute.status, dispute.outcome, dispute.resolved_by) == ("resolved", None, "system")
    assert dispute.note and dispute.resolved_at is not None
    [approval] = await rows(factory, Approval, visit_id=visit_id)
    assert (approval.id, approval.status) == (asked.pending_approval_id, "rejected")
    assert approval.decision_reason == "settled before approval"
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(DISPUTED) is False and attrs.get(HOLD) == "none"
    audited = {(a.actor, a.action) for a in await rows(factory, AuditLog, subject_id=visit_id)}
    assert {("system", "resolve_dispute"), ("system", "reject")} <= audited


async def test_a_dispute_rejected_after_the_default_names_no_past_deadline(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id, _ = await discharged_unpaid(temporal_env, factory, worker)
    await temporal_env.fast_forward(handle, timedelta(days=7, hours=9))
    assert (await handle.query(VisitWorkflow.state)).payment_status == "defaulted"
    await act(handle, "open_dispute", f"patient:{patient_id}", dispute_id="dsp_late")
    assert await refused(handle, "extend_deadline", due_at=FAR) == "invalid_action"
    await act(handle, "resolve_dispute", dispute_id="dsp_late", outcome="rejected")
    texts = [m.template for m in await sms(factory, visit_id)]
    assert "dispute_rejected_defaulted" in texts and "dispute_rejected" not in texts
    await handle.terminate("test over")
