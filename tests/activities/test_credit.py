"""The credit activities against a real database and the simulated platform: what a report
carries (and never), its notice evidence, the correction's status, the answers to objections,
and the deletion of records past their retention. Time is pinned: every `at` is given."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from config import DEV_CREDITOR_CODE, Settings
from db.models import AuditLog, CreditObjection, CreditReport, LedgerEntry, Patient, SmsMessage, Visit
from db.oversight import Dispute
from db.pii import mask_name
from tests.support import PII, add_patient, rows, uid
from worker import activity_functions
from workflows import contracts as c, contracts_credit as k

Factory = async_sessionmaker[AsyncSession]
AT = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
ID_NUMBER = "11010519491231002X"
# what the hospital knows of the visit and must never tell the platform
CLINICAL = ("皮肤科", "王医生", "阿莫西林胶囊", "X-DRUG-7", "drug", "血常规", "lab", "过敏性皮炎")


@pytest.fixture
def acts(settings: Settings, factory: Factory, integrations) -> dict[str, Any]:
    return {f.__name__: f for f in activity_functions(settings, factory, integrations)}


async def run(fn: Any, inp: Any) -> Any:
    return await ActivityEnvironment().run(fn, inp)


async def clinical_visit(factory: Factory, *, with_id_number: bool = True) -> tuple[str, str]:
    """A patient with name and ID number, and a visit full of clinical detail: (patient, visit)."""
    patient_id, visit_id = uid("pat_"), uid("v")
    async with factory() as session, session.begin():
        session.add(
            Patient(
                id=patient_id,
                name_masked=mask_name("张三丰"),
                name_cipher=PII.encrypt("张三丰"),
                id_number_hash=PII.lookup("id_number", ID_NUMBER) if with_id_number else None,
                id_number_masked="110***********002X" if with_id_number else None,
                id_number_cipher=PII.encrypt(ID_NUMBER) if with_id_number else None,
                insured_locally=True,
                created_at=AT - timedelta(days=30),
            )
        )
        await session.flush()
        session.add(
            Visit(
                id=visit_id,
                patient_id=patient_id,
                department="皮肤科",
                doctor="王医生",
                channel="kiosk",
                registration_fee_fen=500,
                request_hash="x",
                stage="discharged",
                payment_status="defaulted",
                discharged_at=AT - timedelta(days=8),
                arrears_at=AT - timedelta(days=7),
                due_at=datetime(2026, 3, 7, 15, 59, tzinfo=UTC),  # 23:59 on the 7th in Shanghai
                created_at=datetime(2026, 2, 27, 17, 30, tzinfo=UTC),  # 01:30 on the 28th in Shanghai
                updated_at=AT,
            )
        )
        await session.flush()
        for code, name, category, fen in (("X-DRUG-7", "阿莫西林胶囊", "drug", 4000), ("L-1", "血常规", "lab", 500)):
            session.add(
                LedgerEntry(
                    idempotency_key=uid("charge-"),
                    visit_id=visit_id,
                    patient_id=patient_id,
                    kind="charge",
                    amount_fen=fen,
                    item_id=code,
                    code=code,
                    name=name,
                    category=category,
                    unit_price_fen=fen,
                    quantity=1,
                    created_at=AT - timedelta(days=8),
                )
            )
    return patient_id, visit_id


async def pre_default_sms(factory: Factory, patient_id: str, visit_id: str, at: datetime) -> int:
    async with factory() as session, session.begin():
        row = SmsMessage(
            idempotency_key=uid(f"visit-{visit_id}:sms:pre_default-"),
            phone_hash="h",
            phone_masked="138****8000",
            template="pre_default",
            params={"amount": "45.00", "deadline": "3月8日 10:00"},
            text="您在皮肤科的费用45.00元未付",  # our own text may say anything: it never leaves for the platform
            patient_id=patient_id,
            visit_id=visit_id,
            status="sent",
            created_at=at,
        )
        session.add(row)
    return row.id


async def received(simulators, visit_id: str) -> list[dict[str, Any]]:
    r = await simulators.inspect._credit.get("_sandbox/records", params={"visit_id": visit_id})
    r.raise_for_status()
    return list(r.json())


def report(patient_id: str, visit_id: str, **kw: Any) -> c.ReportCreditInput:
    return c.ReportCreditInput(kind="report", patient_id=patient_id, visit_id=visit_id, amount_fen=4500, at=AT, **kw)


async def test_a_report_carries_the_debt_only(acts, factory: Factory, simulators, settings: Settings) -> None:
    patient_id, visit_id = await clinical_visit(factory)
    sent_at = AT - timedelta(days=2)
    await pre_default_sms(factory, patient_id, visit_id, sent_at - timedelta(days=3))  # an older text
    message_id = await pre_default_sms(factory, patient_id, visit_id, sent_at)
    result = await run(acts["report_credit"], report(patient_id, visit_id, notice_sent_at=sent_at))
    [seen] = await received(simulators, visit_id)
    assert seen["received"] == {
        "request_id": f"credit-report:{visit_id}",
        "customer_ref": patient_id,
        "account_no": visit_id,
        "subject_name": "张三丰",
        "subject_id_type": "id_card",
        "subject_id_number": ID_NUMBER,
        "creditor_code": DEV_CREDITOR_CODE,
        "creditor_name": settings.hospital_name,
        "amount_owed_fen": 4500,
        "visit_date": "2026-02-28",
        "due_date": "2026-03-07",
        "reported_at": AT.isoformat(),
        "status": "reported",
        "notice_sent_at": sent_at.isoformat(),
        "notice_channel": "sms",
        "notice_message_id": str(message_id),  # no provider's id on the row: our outbox row's
        "notice_message_id_kind": "outbox",
        "notice_template": "pre_default",
    }
    text = json.dumps(seen["received"], ensure_ascii=False)
    assert not [word for word in CLINICAL if word in text]
    [row] = await rows(factory, CreditReport, visit_id=visit_id)
    assert (row.record_id, row.status) == (result.record_id, "reported")
    [entry] = [a for a in await rows(factory, AuditLog, subject_id=patient_id) if a.action == "credit_report"]
    assert entry.detail["notice_message_id"] == str(message_id) and entry.detail["record_id"] == result.record_id


async def test_without_a_notice_on_record_nothing_is_reported(acts, factory: Factory, simulators) -> None:
    patient_id, visit_id = await clinical_visit(factory)
    with pytest.raises(ApplicationError) as err:
        await run(acts["report_credit"], report(patient_id, visit_id))
    assert err.value.type == "notice_missing" and err.value.non_retryable
    # a notice too close to the report: the platform refuses, and we record nothing
    late = AT - timedelta(seconds=10)
    await pre_default_sms(factory, patient_id, visit_id, late)
    with pytest.raises(ApplicationError) as err:
        await run(acts["report_credit"], report(patient_id, visit_id, notice_sent_at=late))
    assert err.value.type == "credit_platform_rejected" and "NoticeTooLate" in err.value.message
    assert await received(simulators, visit_id) == []
    assert await rows(factory, CreditReport, visit_id=visit_id) == []


async def test_the_notice_found_when_the_workflow_did_not_say(acts, factory: Factory, simulators) -> None:
    """A workflow started before the field existed passes no notice_sent_at: the text we recorded counts."""
    patient_id, visit_id = await clinical_visit(factory, with_id_number=False)
    message_id = await pre_default_sms(factory, patient_id, visit_id, AT - timedelta(days=1))
    await run(acts["report_credit"], report(patient_id, visit_id))
    [seen] = await received(simulators, visit_id)
    assert seen["received"]["notice_message_id"] == str(message_id)
    assert seen["received"]["notice_sent_at"] == (AT - timedelta(days=1)).isoformat()
    assert "subject_id_number" not in seen["received"]  # none on record: the name only


@pytest.mark.parametrize(
    ("status", "entry", "expected"),
    [
        ("defaulted", "payment", "corrected_paid"),  # the status moves after the correction
        ("defaulted", "waiver", "corrected_waived"),
        ("written_off", None, "corrected_waived"),
        ("defaulted", None, "corrected_withdrawn"),
    ],
)
async def test_a_correction_says_why(
    acts, factory: Factory, simulators, status: str, entry: str | None, expected: str
) -> None:
    patient_id, visit_id = await clinical_visit(factory)
    await pre_default_sms(factory, patient_id, visit_id, AT - timedelta(days=2))
    await run(acts["report_credit"], report(patient_id, visit_id))
    async with factory() as session, session.begin():
        visit = await session.get(Visit, visit_id)
        assert visit is not None
        visit.payment_status = status
        if entry:
            session.add(
                LedgerEntry(
                    idempotency_key=uid("e-"),
                    visit_id=visit_id,
                    patient_id=patient_id,
                    kind=entry,
                    amount_fen=4500,
                    created_at=AT,
                )
            )
    correction = c.ReportCreditInput(
        kind="correction", patient_id=patient_id, visit_id=visit_id, amount_fen=4500, at=AT + timedelta(days=1)
    )
    await run(acts["report_credit"], correction)
    seen = await received(simulators, visit_id)
    assert [(r["kind"], r["status"]) for r in seen] == [("report", "reported"), ("correction", expected)]
    assert not any(key.startswith("notice_") for key in seen[1]["received"])


async def reported_and_settled(acts, factory: Factory, settled_at: datetime) -> tuple[str, str]:
    patient_id, visit_id = await clinical_visit(factory)
    await pre_default_sms(factory, patient_id, visit_id, AT - timedelta(days=2))
    await run(acts["report_credit"], report(patient_id, visit_id))
    correction = c.ReportCreditInput(
        kind="correction", patient_id=patient_id, visit_id=visit_id, amount_fen=4500, at=settled_at
    )
    await run(acts["report_credit"], correction)
    return patient_id, visit_id


async def test_records_are_deleted_five_years_after_the_debt_ended(acts, factory: Factory, simulators) -> None:
    settled_at = AT + timedelta(days=3)
    patient_id, visit_id = await reported_and_settled(acts, factory, settled_at)
    days = 1826
    before = k.CreditSweepInput(at=settled_at + timedelta(days=days) - timedelta(seconds=1), retention_days=days)
    assert visit_id not in str(await run(acts["expire_credit_records"], before))
    assert all(r["deleted_at"] is None for r in await received(simulators, visit_id))
    due = k.CreditSweepInput(at=settled_at + timedelta(days=days), retention_days=days)
    done = (await run(acts["expire_credit_records"], due)).done
    records = await received(simulators, visit_id)
    assert {r["record_id"] for r in records} <= set(done) and len(records) == 2
    assert all(r["deleted_at"] == due.at.isoformat() for r in records)
    assert all(r.expired_at == due.at for r in await rows(factory, CreditReport, visit_id=visit_id))
    deleted = [a for a in await rows(factory, AuditLog, subject_id=patient_id) if a.action == "credit_record_deleted"]
    assert sorted(a.detail["kind"] for a in deleted) == ["correction", "report"]
    assert all(a.at == due.at and a.actor == "credit_upkeep" for a in deleted)
    # the next run finds nothing more of this visit
    later = k.CreditSweepInput(at=due.at + timedelta(days=1), retention_days=days)
    assert not {r["record_id"] for r in records} & set((await run(acts["expire_credit_records"], later)).done)


async def test_an_unsettled_report_never_expires(acts, factory: Factory, simulators) -> None:
    patient_id, visit_id = await clinical_visit(factory)
    await pre_default_sms(factory, patient_id, visit_id, AT - timedelta(days=2))
    await run(acts["report_credit"], report(patient_id, visit_id))
    far = k.CreditSweepInput(at=AT + timedelta(days=40 * 365), retention_days=1826)
    await run(acts["expire_credit_records"], far)
    assert [r["deleted_at"] for r in await received(simulators, visit_id)] == [None]


async def objection_on(simulators, factory: Factory, visit_id: str, outcome: str | None) -> str:
    """An objection the platform raised (its call to us answered by a stand-in) and the dispute it opened."""

    async def hospital(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    simulators.credit.state.callback = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hospital), base_url="http://hospital"
    )
    r = await simulators.inspect._credit.post("_sandbox/objections", json={"account_no": visit_id})
    assert r.status_code == 200 and r.json()["callback_status"] == 201, r.text
    objection_id = r.json()["objection_id"]
    [reported] = [x for x in await rows(factory, CreditReport, visit_id=visit_id) if x.kind == "report"]
    async with factory() as session, session.begin():
        dispute = Dispute(
            id=uid("dsp_"),
            visit_id=visit_id,
            patient_id=reported.patient_id,
            status="open" if outcome is None else "resolved",
            reason="objection",
            opened_by="credit_platform",
            opened_at=AT,
            outcome=outcome,
        )
        session.add(dispute)
        session.add(
            CreditObjection(
                id=objection_id,
                visit_id=visit_id,
                record_id=str(reported.record_id),
                dispute_id=dispute.id,
                reason="not mine",
                received_at=AT,
            )
        )
    return objection_id


async def answers(simulators) -> dict[str, tuple[str | None, str | None]]:
    r = await simulators.inspect._credit.get("_sandbox/objections")
    return {o["objection_id"]: (o["answer"], o["correction_record_id"]) for o in r.json()}


async def test_objections_are_answered_once_their_dispute_is_resolved(acts, factory: Factory, simulators) -> None:
    sweep = k.CreditSweepInput(at=AT + timedelta(days=5))
    # rejected: the record stands
    _, rejected_visit = await reported_and_settled(acts, factory, AT + timedelta(days=1))
    confirmed = await objection_on(simulators, factory, rejected_visit, "rejected")
    # still open: not answered yet
    patient_id, open_visit = await clinical_visit(factory)
    await pre_default_sms(factory, patient_id, open_visit, AT - timedelta(days=2))
    await run(acts["report_credit"], report(patient_id, open_visit))
    pending = await objection_on(simulators, factory, open_visit, None)
    # upheld, and the visit sent its correction: corrected, naming it
    _, upheld_visit = await reported_and_settled(acts, factory, AT + timedelta(days=2))
    corrected = await objection_on(simulators, factory, upheld_visit, "upheld")
    done = (await run(acts["answer_credit_objections"], sweep)).done
    assert {confirmed, corrected} <= set(done) and pending not in done
    told = await answers(simulators)
    [correction] = [x for x in await rows(factory, CreditReport, visit_id=upheld_visit) if x.kind == "correction"]
    assert told[confirmed] == ("confirmed", None)
    assert told[corrected] == ("corrected", correction.record_id)
    assert told[pending] == (None, None)
    [row] = await rows(factory, CreditObjection, id=confirmed)
    assert (row.answer, row.answered_at) == ("confirmed", sweep.at)
    assert not {confirmed, corrected} & set((await run(acts["answer_credit_objections"], sweep)).done)


async def test_an_upheld_objection_waits_for_the_correction(acts, factory: Factory, simulators) -> None:
    patient_id, visit_id = await clinical_visit(factory)
    await pre_default_sms(factory, patient_id, visit_id, AT - timedelta(days=2))
    await run(acts["report_credit"], report(patient_id, visit_id))
    objection = await objection_on(simulators, factory, visit_id, "upheld")
    sweep = k.CreditSweepInput(at=AT + timedelta(days=1))
    assert objection not in (await run(acts["answer_credit_objections"], sweep)).done
    correction = c.ReportCreditInput(
        kind="correction", patient_id=patient_id, visit_id=visit_id, amount_fen=4500, at=AT + timedelta(days=1)
    )
    await run(acts["report_credit"], correction)
    assert objection in (await run(acts["answer_credit_objections"], sweep)).done
    assert (await answers(simulators))[objection][0] == "corrected"


async def test_an_unused_patient_helper_still_reports_by_name(acts, factory: Factory, simulators) -> None:
    """The support helper's patient (a phone, no ID number) and the app's inbox as the channel."""
    patient_id = await add_patient(factory)
    _, visit_id = await clinical_visit(factory)
    async with factory() as session, session.begin():
        visit = await session.get(Visit, visit_id)
        assert visit is not None
        visit.patient_id = patient_id
    await run(acts["report_credit"], report(patient_id, visit_id, notice_sent_at=AT - timedelta(days=1)))
    [seen] = await received(simulators, visit_id)
    assert seen["received"]["notice_channel"] == "app" and seen["received"]["subject_name"] == "张三丰"
