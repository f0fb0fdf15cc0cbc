"""VisitWorkflow on the real dev server, walking real days with time skipping."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from db.models import (
    AuditLog,
    CardLockHold,
    LedgerEntry,
    Payment,
    Receipt,
    Refund,
    SmsMessage,
    Visit,
    VisitEvent,
)
from domain.policy import PaymentPolicy
from tests.support import Simulators, add_patient, add_visit, card_events, credit_records, pay, rows
from workflows import contracts as c
from workflows.refund import RefundWorkflow
from workflows.visit import VisitWorkflow

SH = ZoneInfo("Asia/Shanghai")
HISTORIES = Path(__file__).resolve().parent.parent / "replay" / "histories"
POLICY = PaymentPolicy()  # the production policy: end of day, 7 days, daily, quiet 21:00-08:00

Factory = async_sessionmaker[AsyncSession]


def item(item_id: str, category: str, price: int, qty: int = 1) -> c.ItemInput:
    return c.ItemInput(
        item_id=item_id,
        code=f"C{item_id}",
        name=f"项目{item_id}",
        category=category,
        unit_price_fen=price,
        quantity=qty,
    )


_hour, _minute = os.environ.get("YHF_TEST_LOCAL_START", "12:00").split(":")
LOCAL_START = (int(_hour), int(_minute))


async def start(
    env: WorkflowEnvironment,
    factory: Factory,
    queue: str,
    *,
    patient_id: str | None = None,
    fee: int = 500,
    policy: PaymentPolicy = POLICY,
    local: tuple[int, int] | None = None,
    continue_after_events: int = 5000,
) -> tuple[WorkflowHandle, str, str]:
    """A visit whose workflow clock is pinned to the next `local` (hour, minute) in Shanghai,
    whatever the hour the test runs at: by default LOCAL_START (12:00, or YHF_TEST_LOCAL_START=HH:MM
    to run every test of this module from another time of day)."""
    local = local or LOCAL_START
    # the clock is pinned up to a day ahead below: the HIS's events come before any auto-discharge
    policy = replace(policy, auto_discharge_after_seconds=max(policy.auto_discharge_after_seconds, 2 * 86400))
    patient_id = patient_id or await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=fee)
    with env.with_time_skipping_disabled():  # time moves only when a test fast-forwards it
        handle = await env.client.start_workflow(
            VisitWorkflow.run,
            c.VisitInput(
                visit_id=visit_id,
                patient_id=patient_id,
                registration_fee_fen=fee,
                policy=policy,
                continue_after_events=continue_after_events,
            ),
            id=c.workflow_id(visit_id),
            task_queue=queue,
        )
    await wait_for(handle, lambda s: s.balance_fen == fee)  # registration booked: nothing runs now
    now = await env.get_current_time(handle)
    target = datetime.combine(now.astimezone(SH).date(), time(*local), tzinfo=SH)
    if target <= now:
        target += timedelta(days=1)
    await env.fast_forward(handle, target - now)
    CLOCKS[handle.id] = env
    return handle, visit_id, patient_id


CLOCKS: dict[str, WorkflowEnvironment] = {}  # workflow id -> the environment keeping its clock


async def now_of(handle: WorkflowHandle) -> datetime:
    """The workflow's virtual now (never the wall clock)."""
    return await CLOCKS[handle.id].get_current_time(handle)


async def event(handle: WorkflowHandle, event_id: str, type_: str, **fields: Any) -> c.VisitRecordResult:
    inp = c.RecordEventInput(event_id=event_id, type=type_, occurred_at=await now_of(handle), **fields)
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


async def wait_for(handle: WorkflowHandle, predicate, timeout: float = 20.0) -> c.VisitStateResult:
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


async def test_events_are_validated_and_charged_once(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
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


async def test_paid_on_day_three_after_arrears(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
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
    assert await card_events(simulators, patient_id) == []
    await record(handle, "paid_day_three_after_arrears")


STARTS = [(0, 30), (7, 59), (12, 0), (20, 59), (23, 59)]


async def test_default_after_seven_days_then_payment_undoes_it(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    """The 7-day path discharged at 00:30, 07:59, 12:00, 20:59 and 23:59 Shanghai time. Each
    visit has its own clock, so they run at once (the wait is the server's, not the CPU's)."""

    async def labelled(local: tuple[int, int]) -> None:
        try:
            await default_path(temporal_env, factory, worker, simulators, local)
        except AssertionError as err:
            raise AssertionError(f"discharged at {local[0]:02d}:{local[1]:02d}: {err}") from err

    await asyncio.gather(*(labelled(local) for local in STARTS))


async def default_path(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators, local: tuple[int, int]
) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker, local=local)
    await quick_visit(handle)
    await wait_for(handle, lambda s: s.payment_status == "due")
    discharged = (await rows(factory, Visit, id=visit_id))[0].discharged_at
    assert discharged.astimezone(SH).time().replace(second=0, microsecond=0) == time(*local)
    await temporal_env.fast_forward(handle, timedelta(days=7, hours=9))  # the lock, and a night after it
    state = await handle.query(VisitWorkflow.state)
    assert state.payment_status == "defaulted" and state.card_locked and state.credit_reported
    [lock] = await card_events(simulators, patient_id)
    assert lock.action == "lock"
    reports = await credit_records(simulators, visit_id)
    assert [(r.kind, r.amount_fen) for r in reports] == [("report", 5000)]
    assert lock.at - discharged >= timedelta(days=7)
    messages = await sms(factory, visit_id)
    templates = [m.template for m in messages]
    [notice] = [m for m in messages if m.template == "pre_default"]
    [locked] = [m for m in messages if m.template == "card_locked"]
    assert templates.index("pre_default") < templates.index("card_locked")
    # told a full day ahead, outside quiet hours (08:00-21:00 local), and only then locked and reported
    assert lock.at - notice.created_at >= timedelta(days=1)
    assert state.notice_sent_at is not None and lock.at - state.notice_sent_at >= timedelta(days=1)
    for m in messages:  # every reminder and sanction text, card_locked too, outside quiet hours
        if m.template in ("bill_ready", "payment_received"):  # the visit's own moment: sent as it happens
            continue
        assert 8 <= m.created_at.astimezone(SH).hour < 21, (m.template, m.created_at)
    assert locked.created_at >= lock.at
    # reminders after the deadline say what happened, not a date already past
    for m in messages:
        if m.created_at > lock.at and m.template.startswith("dunning"):
            assert m.template == "dunning_defaulted" and "已锁定" in m.text and "前支付" not in m.text
    if local in ((0, 30), (23, 59)):  # locked in the night: the morning's reminder comes after it
        assert "dunning_defaulted" in templates

    await pay(factory, patient_id, visit_id, 5000)
    await handle.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p", amount_fen=5000))
    result = await handle.result()
    assert result.payment_status == "settled" and not result.card_locked and not result.credit_reported
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock", "unlock"]
    reports = await credit_records(simulators, visit_id)
    assert [(r.kind, r.amount_fen) for r in reports] == [("report", 5000), ("correction", 5000)]
    assert (await sms(factory, visit_id))[-1].template == "payment_received_unlocked"
    if local in ((12, 0), (23, 59)):
        await record(handle, f"defaulted_from_{local[0]:02d}{local[1]:02d}_then_paid")


async def test_a_payment_whose_signal_never_came_stops_arrears(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker, local=(12, 0))
    await quick_visit(handle)
    await wait_for(handle, lambda s: s.payment_status == "due")
    await pay(factory, patient_id, visit_id, 5000)  # booked in the ledger; the visit is never told
    await temporal_env.fast_forward(handle, timedelta(hours=13))  # past the end of the visit day
    result = await handle.result()
    assert result.payment_status == "settled" and result.balance_fen == 0
    assert [m.template for m in await sms(factory, visit_id)] == ["bill_ready", "payment_received"]
    statuses = [
        a.detail["after"] for a in await rows(factory, AuditLog, subject_id=visit_id) if a.action == "payment_status"
    ]
    assert statuses == ["due", "settled"]  # never arrears with the money in the ledger
    await record(handle, "paid_without_a_signal")


async def test_an_event_the_database_refuses_answers_at_once_and_the_visit_goes_on(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, database_url: str
) -> None:
    if database_url.startswith("sqlite"):  # the activity tests cover what SQLite refuses
        pytest.skip("SQLite stores a NUL")
    handle, _, _ = await start(temporal_env, factory, worker)
    for n, type_ in enumerate(["checked_in", "called", "consultation_started"]):
        await event(handle, f"e{n}", type_)
    bad = c.ItemInput(item_id="x", code="X", name="血常规\x00", category="lab", unit_price_fen=100, quantity=1)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await asyncio.wait_for(event(handle, "bad", "orders_placed", items=[bad]), timeout=10)
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "invalid_request"  # the API's 422
    ok = await asyncio.wait_for(event(handle, "good", "orders_placed", items=[item("lab1", "lab", 100)]), timeout=10)
    assert ok.balance_fen == 600 and ok.stage == "in_consultation"
    await handle.terminate("test over")


async def test_payment_landing_at_the_deadline_never_locks(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    handle, visit_id, patient_id = await start(temporal_env, factory, worker)
    await quick_visit(handle)
    state = await wait_for(handle, lambda s: s.payment_status == "due")
    assert state.due_at is not None
    # move to just before the deadline; the money lands but its signal is lost on the way
    now = await temporal_env.get_current_time(handle)
    await temporal_env.fast_forward(handle, state.due_at - now - timedelta(minutes=1))
    assert (await handle.query(VisitWorkflow.state)).payment_status == "arrears"
    await pay(factory, patient_id, visit_id, 5000)
    await temporal_env.fast_forward(handle, timedelta(hours=1))
    result = await handle.result()
    assert result.payment_status == "settled" and not result.card_locked
    assert await card_events(simulators, patient_id) == []
    assert await credit_records(simulators, visit_id) == []
    await record(handle, "paid_at_the_deadline")


async def test_two_overdue_visits_share_one_lock(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str, simulators: Simulators
) -> None:
    first, v1, patient_id = await start(temporal_env, factory, worker)
    second, v2, _ = await start(temporal_env, factory, worker, patient_id=patient_id)

    async def overdue(handle: WorkflowHandle) -> None:
        await quick_visit(handle)
        await wait_for(handle, lambda s: s.payment_status == "due")
        await temporal_env.fast_forward(handle, timedelta(days=7, hours=1))
        assert (await handle.query(VisitWorkflow.state)).card_locked

    await asyncio.gather(overdue(first), overdue(second))  # both lock at once: still one lock at the bureau
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock"]
    assert len(await rows(factory, CardLockHold, patient_id=patient_id)) == 2

    await pay(factory, patient_id, v1, 5000)
    await first.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p1", amount_fen=5000))
    assert (await first.result()).payment_status == "settled"
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock"]

    await pay(factory, patient_id, v2, 5000)
    await second.signal(VisitWorkflow.payment_received, c.PaymentReceivedInput(payment_id="p2", amount_fen=5000))
    assert (await second.result()).payment_status == "settled"
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock", "unlock"]
    # each visit's credit record was corrected on its own
    for visit_id in (v1, v2):
        kinds = [r.kind for r in await credit_records(simulators, visit_id)]
        assert kinds == ["report", "correction"]


async def test_cancelled_after_settlement_is_refunded_then_the_visit_closes(
    temporal_env: WorkflowEnvironment, factory: Factory, worker: str
) -> None:
    handle, visit_id, patient_id = await start(
        temporal_env, factory, worker, policy=PaymentPolicy(refund_window_seconds=3 * 86400)
    )
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
        ("charge", 500),
        ("charge", 4500),
        ("payment", 5000),
        ("refund", 4500),
        ("reversal", 4500),
    ]
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
