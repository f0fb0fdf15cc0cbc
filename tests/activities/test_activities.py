"""Activities against a real database and the simulators: a retried activity books,
sends, locks or reports nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import cannot_succeed_on_retry
from config import Settings
from db.models import CreditReport, LedgerEntry, SmsMessage, VisitEvent
from tests.support import add_patient, add_visit, card_events, credit_records, rows
from worker import activity_functions
from workflows import contracts as c

Factory = async_sessionmaker[AsyncSession]
AT = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)


@pytest.fixture
def acts(settings: Settings, factory: Factory, integrations):
    funcs = activity_functions(settings, factory, integrations)
    return {f.__name__: f for f in funcs}


async def twice(fn, inp):
    env = ActivityEnvironment()
    first = await env.run(fn, inp)
    second = await env.run(fn, inp)
    return first, second


async def test_charges_are_booked_once(acts, factory: Factory) -> None:
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=500)
    await twice(
        acts["book_registration"],
        c.BookRegistrationInput(visit_id=visit_id, patient_id=patient_id, registration_fee_fen=500),
    )
    event = c.RecordEventInput(
        event_id="e1",
        type="orders_placed",
        occurred_at=AT,
        items=[c.ItemInput(item_id="ct", code="CT", name="CT", category="exam", unit_price_fen=20000, quantity=2)],
    )
    inp = c.ApplyVisitEventInput(
        visit_id=visit_id, patient_id=patient_id, event=event, stage_after="in_consultation", charge=list(event.items)
    )
    first, second = await twice(acts["apply_visit_event"], inp)
    assert first == second == c.BalanceResult(total_fen=40500, paid_fen=0, balance_fen=40500)
    assert len(await rows(factory, LedgerEntry, visit_id=visit_id)) == 2
    assert len(await rows(factory, VisitEvent, visit_id=visit_id)) == 1


async def test_an_sms_is_sent_once_per_key(acts, factory: Factory) -> None:
    patient_id = await add_patient(factory, phone="13700000001")
    visit_id = await add_visit(factory, patient_id)
    inp = c.SendSmsInput(
        idempotency_key=f"visit-{visit_id}:sms:dunning-1",
        patient_id=patient_id,
        visit_id=visit_id,
        template="dunning",
        params={"amount": "45.00", "deadline": "3月8日 10:00"},
        at=AT,
    )
    first, second = await twice(acts["send_sms"], inp)
    assert first == second
    [message] = await rows(factory, SmsMessage, visit_id=visit_id)
    assert message.phone_masked == "137****0001" and "45.00元" in message.text


async def test_lock_and_report_once(acts, factory: Factory, simulators) -> None:
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id)
    lock = c.CardLockInput(patient_id=patient_id, visit_id=visit_id, reason="overdue", at=AT)
    first, second = await twice(acts["lock_card"], lock)
    assert first.locked and first.bureau_called
    assert second.locked and not second.bureau_called
    report = c.ReportCreditInput(
        kind="report",
        patient_id=patient_id,
        visit_id=visit_id,
        amount_fen=4500,
        at=AT,
        notice_sent_at=AT - timedelta(days=2),
    )
    first_r, second_r = await twice(acts["report_credit"], report)
    assert first_r == second_r
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock"]
    assert len(await credit_records(simulators, visit_id)) == 1
    assert len(await rows(factory, CreditReport, visit_id=visit_id)) == 1
    await twice(acts["unlock_card"], lock)
    assert [e.action for e in await card_events(simulators, patient_id)] == ["lock", "unlock"]
    # a paid visit never locks the card again, even if a late retry of its lock arrives
    again = await ActivityEnvironment().run(acts["lock_card"], lock)
    assert not again.locked and not again.bureau_called


BAD_VALUES: dict[str, dict[str, Any]] = {  # what each database refuses, the same way on every attempt
    "nul_in_name": dict(name="血常规\x00"),  # PostgreSQL: CharacterNotInRepertoireError (SQLite stores it)
    "name_too_long": dict(name="血" * 201),  # PostgreSQL: varchar(200)
    "price_too_large": dict(unit_price_fen=2**70),  # both: no 64-bit integer holds it
}


@pytest.mark.parametrize("bad", BAD_VALUES, ids=list(BAD_VALUES))
async def test_data_the_database_refuses_is_not_retried(acts, factory: Factory, database_url: str, bad: str) -> None:
    if database_url.startswith("sqlite") and bad != "price_too_large":
        pytest.skip("SQLite stores it")
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=500)
    fields: dict[str, Any] = dict(item_id="x", code="X", name="血常规", category="lab", unit_price_fen=100, quantity=1)
    event = c.RecordEventInput(
        event_id="e1", type="orders_placed", occurred_at=AT, items=[c.ItemInput(**{**fields, **BAD_VALUES[bad]})]
    )
    inp = c.ApplyVisitEventInput(
        visit_id=visit_id, patient_id=patient_id, event=event, stage_after="in_consultation", charge=list(event.items)
    )
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(acts["apply_visit_event"], inp)
    assert refused.value.type == "invalid_input" and refused.value.non_retryable
    assert "血常规" not in refused.value.message and str(2**70) not in refused.value.message
    assert await rows(factory, LedgerEntry, visit_id=visit_id) == []
    assert await rows(factory, VisitEvent, visit_id=visit_id) == []
    # the visit goes on: the corrected event is booked
    good = c.RecordEventInput(event_id="e2", type="orders_placed", occurred_at=AT, items=[c.ItemInput(**fields)])
    booked = await ActivityEnvironment().run(
        acts["apply_visit_event"],
        c.ApplyVisitEventInput(
            visit_id=visit_id, patient_id=patient_id, event=good, stage_after="in_consultation", charge=list(good.items)
        ),
    )
    assert booked.balance_fen == 100


async def test_a_unique_key_race_is_retried(factory: Factory) -> None:
    """A concurrent retry that wrote first: the next attempt finds the work done, so retry."""
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id)
    entry = dict(
        idempotency_key=f"race-{visit_id}",
        visit_id=visit_id,
        patient_id=patient_id,
        kind="charge",
        amount_fen=1,
        created_at=AT,
    )
    async with factory() as session, session.begin():
        session.add(LedgerEntry(**entry))
    with pytest.raises(IntegrityError) as raced:
        async with factory() as session, session.begin():
            session.add(LedgerEntry(**entry))
    assert not cannot_succeed_on_retry(raced.value)
    with pytest.raises(IntegrityError) as dangling:  # a visit that does not exist: no retry mends it
        async with factory() as session, session.begin():
            session.add(LedgerEntry(**{**entry, "idempotency_key": f"fk-{visit_id}", "visit_id": "no-such-visit"}))
    assert cannot_succeed_on_retry(dangling.value)
