"""Activities against a real database and the simulators: a retried activity books,
sends, locks or reports nothing twice."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import datetime, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from config import Settings
from db.models import CreditReport, LedgerEntry, SimCreditRecord, SimInsuranceCardEvent, SmsMessage, VisitEvent
from tests.support import add_patient, add_visit, rows
from integrations.factory import build_integrations
from worker import activity_functions
from workflows import contracts as c

Factory = async_sessionmaker[AsyncSession]
AT = datetime(2026, 3, 8, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
async def acts(settings: Settings, factory: Factory):  # type: ignore[no-untyped-def]
    async with AsyncExitStack() as stack:
        funcs = activity_functions(settings, factory, build_integrations(settings, factory, stack))
        yield {f.__name__: f for f in funcs}  # type: ignore[attr-defined]


async def twice(fn, inp):  # type: ignore[no-untyped-def]
    env = ActivityEnvironment()
    first = await env.run(fn, inp)
    second = await env.run(fn, inp)
    return first, second


async def test_charges_are_booked_once(acts, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=500)
    await twice(acts["book_registration"], c.BookRegistrationInput(visit_id=visit_id, patient_id=patient_id,
                                                                   registration_fee_fen=500))
    event = c.RecordEventInput(event_id="e1", type="orders_placed", occurred_at=AT, items=[
        c.ItemInput(item_id="ct", code="CT", name="CT", category="exam", unit_price_fen=20000, quantity=2)])
    inp = c.ApplyVisitEventInput(visit_id=visit_id, patient_id=patient_id, event=event, stage_after="in_consultation",
                                 charge=list(event.items))
    first, second = await twice(acts["apply_visit_event"], inp)
    assert first == second == c.BalanceResult(total_fen=40500, paid_fen=0, balance_fen=40500)
    assert len(await rows(factory, LedgerEntry, visit_id=visit_id)) == 2
    assert len(await rows(factory, VisitEvent, visit_id=visit_id)) == 1


async def test_an_sms_is_sent_once_per_key(acts, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    patient_id = await add_patient(factory, phone="13700000001")
    visit_id = await add_visit(factory, patient_id)
    inp = c.SendSmsInput(idempotency_key=f"visit-{visit_id}:sms:dunning-1", patient_id=patient_id, visit_id=visit_id,
                         template="dunning", params={"amount": "45.00", "deadline": "3月8日 10:00"}, at=AT)
    first, second = await twice(acts["send_sms"], inp)
    assert first == second
    [message] = await rows(factory, SmsMessage, visit_id=visit_id)
    assert message.phone_masked == "137****0001" and "45.00元" in message.text


async def test_lock_and_report_once(acts, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id)
    lock = c.CardLockInput(patient_id=patient_id, visit_id=visit_id, reason="overdue", at=AT)
    first, second = await twice(acts["lock_card"], lock)
    assert first.locked and first.bureau_called
    assert second.locked and not second.bureau_called
    report = c.ReportCreditInput(kind="report", patient_id=patient_id, visit_id=visit_id, amount_fen=4500, at=AT)
    first_r, second_r = await twice(acts["report_credit"], report)
    assert first_r == second_r
    assert [e.action for e in await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)] == ["lock"]
    assert len(await rows(factory, SimCreditRecord, visit_id=visit_id)) == 1
    assert len(await rows(factory, CreditReport, visit_id=visit_id)) == 1
    await twice(acts["unlock_card"], lock)
    assert [e.action for e in await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)] == ["lock", "unlock"]
    # a paid visit never locks the card again, even if a late retry of its lock arrives
    again = await ActivityEnvironment().run(acts["lock_card"], lock)
    assert not again.locked and not again.bureau_called
