"""VisitWorkflow on the real dev server, walking real days with time skipping."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from db.models import CardLockHold, LedgerEntry, SimCreditRecord, SimInsuranceCardEvent, SmsMessage, Visit, VisitEvent
from domain.policy import PaymentPolicy
from tests.support import add_patient, add_visit, pay, rows
from workflows import contracts as c
from workflows.visit import VisitWorkflow

SH = ZoneInfo("Asia/Shanghai")
HISTORIES = Path(__file__).resolve().parent.parent / "replay" / "histories"
POLICY = PaymentPolicy()  # the production policy: end of day, 7 days, daily, quiet 21:00-08:00

Factory = async_sessionmaker[AsyncSession]


def item(item_id: str, category: str, price: int, qty: int = 1) -> c.ItemInput:
    return c.ItemInput(item_id=item_id, code=f"C{item_id}", name=f"项目{item_id}", category=category,
                       unit_price_fen=price, quantity=qty)


async def start(env: WorkflowEnvironment, factory: Factory, queue: str, *, patient_id: str | None = None,
                fee: int = 500, policy: PaymentPolicy = POLICY) -> tuple[WorkflowHandle, str, str]:
    patient_id = patient_id or await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=fee)
    with env.with_time_skipping_disabled():  # time moves only when a test fast-forwards it
        handle = await env.client.start_workflow(
            VisitWorkflow.run,
            c.VisitInput(visit_id=visit_id, patient_id=patient_id, registration_fee_fen=fee, policy=policy),
            id=c.workflow_id(visit_id), task_queue=queue)
    return handle, visit_id, patient_id


async def event(handle: WorkflowHandle, event_id: str, type_: str, **fields: object) -> c.VisitStateResult:
    inp = c.RecordEventInput(event_id=event_id, type=type_, occurred_at=datetime.now(timezone.utc), **fields)
    return await handle.execute_update(VisitWorkflow.record_event, inp, id=event_id)


async def quick_visit(handle: WorkflowHandle, price: int = 4500) -> None:
    """Check in, see the doctor, one lab, go home."""
    await event(handle, "e1", "checked_in", channel="nurse_station")
    await event(handle, "e2", "called")
    await event(handle, "e3", "consultation_started")
    await event(handle, "e4", "orders_placed", items=[item("lab1", "lab", price)])
    await event(handle, "e5", "consultation_ended")
    await event(handle, "e6", "results_ready", item_ids=["lab1"])
    await event(handle, "e7", "discharged")


async def record(handle: WorkflowHandle, name: str) -> None:
    """With YHF_RECORD_HISTORIES=1, keep this run's history for the replay tests."""
    if os.environ.get("YHF_RECORD_HISTORIES") != "1":
        return
    path = HISTORIES / f"{name}.json"
    if path.exists():  # a history is a record of how earlier code ran: never rewritten
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    path.write_text(history.to_json())


async def sms(factory: Factory, visit_id: str) -> list[SmsMessage]:
    return await rows(factory, SmsMessage, visit_id=visit_id)


async def wait_for(handle: WorkflowHandle, predicate, timeout: float = 20.0) -> c.VisitStateResult:  # type: ignore[no-untyped-def]
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await handle.query(VisitWorkflow.state)
        if predicate(state):
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last state {state}")
        await asyncio.sleep(0.1)


async def test_paid_the_same_day(temporal_env: WorkflowEnvironment, factory: Factory, worker: str) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker)
    await quick_visit(handle)
    state = await wait_for(handle, lambda s: s.payment_status == "due")
    assert state.balance_fen == 5000
    assert state.arrears_at is not None and state.arrears_at.astimezone(SH).hour == 0
    await pay(factory, patient_id, visit_id, 5000)
    await handle.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p", amount_fen=5000))
    result = await handle.result()
    assert result.payment_status == "settled" and result.balance_fen == 0
    assert [m.template for m in await sms(factory, visit_id)] == ["bill_ready", "payment_received"]
    await record(handle, "paid_same_day")
    visit = (await rows(factory, Visit, id=visit_id))[0]
    assert visit.payment_status == "settled" and visit.stage == "discharged"


async def test_events_are_validated_and_charged_once(temporal_env: WorkflowEnvironment, factory: Factory,
                                                     worker: str) -> None:
    handle, visit_id, _ = await start(temporal_env, factory, worker)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await event(handle, "bad", "consultation_started")
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "invalid_transition"
    assert cause.details[0]["stage"] == "registered" and "checked_in" in cause.details[0]["allowed"]
    await event(handle, "e1", "checked_in")
    await event(handle, "e2", "called")
    await event(handle, "e3", "consultation_started")
    first = await event(handle, "e4", "orders_placed", items=[item("ct", "exam", 20000)])
    again = await event(handle, "e4", "orders_placed", items=[item("ct", "exam", 20000)])
    assert first.balance_fen == again.balance_fen == 20500
    charges = [e for e in await rows(factory, LedgerEntry, visit_id=visit_id) if e.kind == "charge"]
    assert sorted(e.amount_fen for e in charges) == [500, 20000]
    assert len(await rows(factory, VisitEvent, visit_id=visit_id)) == 4
    cancelled = await event(handle, "e5", "orders_cancelled", item_ids=["ct"])
    assert cancelled.balance_fen == 500
    await record(handle, "events_in_progress")
    await handle.terminate("test over")


async def test_paid_on_day_three_after_arrears(temporal_env: WorkflowEnvironment, factory: Factory,
                                               worker: str) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker)
    await quick_visit(handle)
    await wait_for(handle, lambda s: s.payment_status == "due")
    await temporal_env.fast_forward(handle, timedelta(days=3))
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "arrears" and not state.card_locked
    messages = await sms(factory, visit_id)
    assert messages[0].template == "bill_ready" and messages[1].template == "arrears"
    dunning = [m for m in messages if m.template in ("arrears", "dunning")]
    assert 2 <= len(dunning) <= 4  # one a day, each between 08:00 and 21:00 Shanghai time
    for m in dunning:
        local = m.created_at.astimezone(SH)
        assert 8 <= local.hour < 21, local
    assert (await rows(factory, Visit, id=visit_id))[0].payment_status == "arrears"
    await pay(factory, patient_id, visit_id, 5000)
    await handle.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p", amount_fen=5000))
    result = await handle.result()
    assert result.payment_status == "settled" and not result.card_locked and not result.credit_reported
    assert (await sms(factory, visit_id))[-1].template == "payment_received"
    assert await rows(factory, SimInsuranceCardEvent, patient_id=patient_id) == []
    await record(handle, "paid_day_three_after_arrears")


async def test_default_after_seven_days_then_payment_undoes_it(temporal_env: WorkflowEnvironment,
                                                               factory: Factory, worker: str) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker)
    await quick_visit(handle)
    await wait_for(handle, lambda s: s.payment_status == "due")
    await temporal_env.fast_forward(handle, timedelta(days=7, hours=1))
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "defaulted" and state.card_locked and state.credit_reported
    card = await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)
    assert [e.action for e in card] == ["lock"]
    reports = await rows(factory, SimCreditRecord, visit_id=visit_id)
    assert [(r.kind, r.amount_fen) for r in reports] == [("report", 5000)]
    discharged = (await rows(factory, Visit, id=visit_id))[0].discharged_at
    assert card[0].at - discharged >= timedelta(days=7)
    messages = await sms(factory, visit_id)
    templates = [m.template for m in messages]
    assert templates.index("pre_default") < templates.index("card_locked")
    notice = messages[templates.index("pre_default")]
    # told a day ahead (08:00-21:00 local), and only then locked and reported
    assert timedelta(hours=23) < card[0].at - notice.created_at <= timedelta(days=1, minutes=1)
    assert 8 <= notice.created_at.astimezone(SH).hour < 21
    assert state.notice_sent_at is not None

    await pay(factory, patient_id, visit_id, 5000)
    await handle.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p", amount_fen=5000))
    result = await handle.result()
    assert result.payment_status == "settled" and not result.card_locked and not result.credit_reported
    assert [e.action for e in await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)] == ["lock", "unlock"]
    reports = await rows(factory, SimCreditRecord, visit_id=visit_id)
    assert [(r.kind, r.amount_fen) for r in reports] == [("report", 5000), ("correction", 5000)]
    assert (await sms(factory, visit_id))[-1].template == "payment_received_unlocked"
    await record(handle, "defaulted_with_notice_then_paid")


async def test_payment_landing_at_the_deadline_never_locks(temporal_env: WorkflowEnvironment,
                                                           factory: Factory, worker: str) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker)
    await quick_visit(handle)
    state = await wait_for(handle, lambda s: s.payment_status == "due")
    assert state.due_at is not None
    # move to just before the deadline; the money lands but its signal is lost on the way
    now = datetime.now(timezone.utc)
    await temporal_env.fast_forward(handle, state.due_at - now - timedelta(minutes=1))
    assert (await handle.query(VisitWorkflow.state)).payment_status == "arrears"
    await pay(factory, patient_id, visit_id, 5000)
    await temporal_env.fast_forward(handle, timedelta(hours=1))
    result = await handle.result()
    assert result.payment_status == "settled" and not result.card_locked
    assert await rows(factory, SimInsuranceCardEvent, patient_id=patient_id) == []
    assert await rows(factory, SimCreditRecord, visit_id=visit_id) == []
    await record(handle, "paid_at_the_deadline")


async def test_two_overdue_visits_share_one_lock(temporal_env: WorkflowEnvironment, factory: Factory,
                                                 worker: str) -> None:
    first, v1, patient_id = await start(temporal_env, factory, worker)
    second, v2, _ = await start(temporal_env, factory, worker, patient_id=patient_id)
    for handle in (first, second):
        await quick_visit(handle)
        await wait_for(handle, lambda s: s.payment_status == "due")
        await temporal_env.fast_forward(handle, timedelta(days=7, hours=1))
        assert (await handle.query(VisitWorkflow.state)).card_locked
    assert [e.action for e in await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)] == ["lock"]
    assert len(await rows(factory, CardLockHold, patient_id=patient_id)) == 2

    await pay(factory, patient_id, v1, 5000)
    await first.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p1", amount_fen=5000))
    assert (await first.result()).payment_status == "settled"
    assert [e.action for e in await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)] == ["lock"]

    await pay(factory, patient_id, v2, 5000)
    await second.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p2", amount_fen=5000))
    assert (await second.result()).payment_status == "settled"
    assert [e.action for e in await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)] == ["lock", "unlock"]
    # each visit's credit record was corrected on its own
    for visit_id in (v1, v2):
        kinds = [r.kind for r in await rows(factory, SimCreditRecord, visit_id=visit_id)]
        assert kinds == ["report", "correction"]


async def test_cancelled_after_settlement_is_refunded_then_the_visit_closes(
        temporal_env: WorkflowEnvironment, factory: Factory, worker: str) -> None:
    import asyncio

    from db.models import Payment, Receipt, Refund
    from workflows.refund import RefundWorkflow

    handle, visit_id, patient_id = await start(temporal_env, factory, worker,
                                               policy=PaymentPolicy(refund_window_seconds=3 * 86400))
    await quick_visit(handle, price=4500)
    payment_id = await pay(factory, patient_id, visit_id, 5000, method="sandbox")
    await handle.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id=payment_id, amount_fen=5000))
    await wait_for(handle, lambda s: s.payment_status == "settled")
    # 退费: the lab is cancelled after the bill was paid; the settled visit is still open for it
    after = await event(handle, "e8", "orders_cancelled", item_ids=["lab1"])
    assert after.balance_fen == -4500
    await wait_for(handle, lambda s: s.balance_fen == 0)
    [refund] = await rows(factory, Refund, visit_id=visit_id)
    assert (refund.amount_fen, refund.payment_id, refund.reason) == (4500, payment_id, "cancellation")
    child = temporal_env.client.get_workflow_handle_for(RefundWorkflow.run, c.refund_workflow_id(refund.id))
    outcome = await child.result()
    assert outcome.status == "succeeded"
    [paid] = await rows(factory, Payment, id=payment_id)
    assert (paid.status, paid.refunded_fen) == ("partially_refunded", 4500)
    entries = await rows(factory, LedgerEntry, visit_id=visit_id)
    assert sorted((e.kind, e.amount_fen) for e in entries) == [
        ("charge", 500), ("charge", 4500), ("payment", 5000), ("refund", 4500), ("reversal", 4500)]
    # the window closes after three days and the visit's workflow completes
    await temporal_env.fast_forward(handle, timedelta(days=3, minutes=1))
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.payment_status == "settled" and result.balance_fen == 0
    texts = [m.template for m in await sms(factory, visit_id)]
    assert "refund_sent" in texts
    # the receipt shows the bill as it ends; one issued at settlement (unless the cancellation
    # was booked first) is voided by it (红冲)
    receipts = sorted(await rows(factory, Receipt, visit_id=visit_id), key=lambda r: r.version)
    assert (receipts[-1].total_fen, receipts[-1].paid_fen, receipts[-1].voided_at) == (500, 500, None)
    assert [(r.total_fen, r.voided_at is not None) for r in receipts[:-1]] in ([], [(5000, True)])
    await record(handle, "refunded_after_settlement_with_receipts")
    await record(child, "refund_sandbox")
